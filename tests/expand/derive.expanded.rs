/// A provider's usage block.
struct Usage {
    #[usage(input_tokens)]
    prompt_tokens: u32,
    #[usage(output_tokens)]
    completion_tokens: Option<u64>,
}
#[automatically_derived]
impl ::usage_runtime::UsageReport for Usage {
    fn usage(&self) -> ::usage_runtime::TokenUsage<'_> {
        let mut __usage = ::usage_runtime::TokenUsage::new();
        ::usage_runtime::__private::add_field_count::<
            u32,
        >(
            &mut __usage,
            ::usage_runtime::__private::TokenKind::Input,
            &self.prompt_tokens,
        );
        ::usage_runtime::__private::add_field_count::<
            Option<u64>,
        >(
            &mut __usage,
            ::usage_runtime::__private::TokenKind::Output,
            &self.completion_tokens,
        );
        __usage
    }
}
/// A reply that carries the block and the model.
struct Reply<'a> {
    #[usage(model)]
    model: &'a str,
    #[usage(flatten)]
    usage: Usage,
}
#[automatically_derived]
impl<'a> ::usage_runtime::UsageReport for Reply<'a> {
    fn usage(&self) -> ::usage_runtime::TokenUsage<'_> {
        let mut __usage = ::usage_runtime::TokenUsage::new();
        ::usage_runtime::__private::set_field_model::<
            &'a str,
        >(&mut __usage, &self.model);
        __usage
            .merge(
                <Usage as ::usage_runtime::__private::UsageReport>::usage(&self.usage),
            );
        __usage
    }
}
/// Each variant reports its own fields.
enum Outcome {
    Chat(#[usage(flatten)] Reply<'static>),
    Embedding { #[usage(input_tokens, cached_input_tokens)] tokens: u32 },
    Failed,
}
#[automatically_derived]
impl ::usage_runtime::UsageReport for Outcome {
    fn usage(&self) -> ::usage_runtime::TokenUsage<'_> {
        let mut __usage = ::usage_runtime::TokenUsage::new();
        #[allow(unreachable_patterns)]
        match self {
            Self::Chat { 0: __usage_field_0, .. } => {
                __usage
                    .merge(
                        <Reply<
                            'static,
                        > as ::usage_runtime::__private::UsageReport>::usage(
                            __usage_field_0,
                        ),
                    );
            }
            Self::Embedding { tokens: __usage_field_0, .. } => {
                ::usage_runtime::__private::add_field_count::<
                    u32,
                >(
                    &mut __usage,
                    ::usage_runtime::__private::TokenKind::Input,
                    __usage_field_0,
                );
                ::usage_runtime::__private::add_field_count::<
                    u32,
                >(
                    &mut __usage,
                    ::usage_runtime::__private::TokenKind::CachedInput,
                    __usage_field_0,
                );
            }
            Self::Failed { .. } => {}
            _ => {}
        }
        __usage
    }
}
