fn embed(text: &str) -> Result<Vec<f32>, EmbedError> {
    static __USAGE_OPERATION: ::my_usage::__private::Operation = ::my_usage::__private::Operation::new(
        "embed",
        ::core::concat!(::core::module_path!(), "::", "embed"),
        ::core::file!(),
        ::core::line!(),
        false,
    );
    ::my_usage::__private::inventory::submit! {
        ::my_usage::__private::Registration(& __USAGE_OPERATION)
    }
    let __usage_guard = ::my_usage::__private::CallGuard::start(
        &__USAGE_OPERATION,
        ::core::option::Option::None,
    );
    #[allow(clippy::redundant_closure_call)]
    let __usage_ret: Result<Vec<f32>, EmbedError> = (move || {
        let tokens = tokenize(text)?;
        Ok(model::embed(&tokens))
    })();
    __usage_guard
        .finish({
            #[allow(unused_imports)]
            use ::my_usage::__private::{
                ViaClassify as _, ViaDefault as _, ViaResult as _,
            };
            (&&&::my_usage::__private::Probe(&__usage_ret)).__usage_verdict()
        });
    __usage_ret
}
