fn embed(text: &str) -> Result<Vec<f32>, EmbedError> {
    ::my_usage::__private::operation!("embed", "embed", false);
    let mut __usage_guard = ::my_usage::__private::CallGuard::start(
        &__USAGE_OPERATION,
        ::core::option::Option::None,
    );
    let __usage_ret: Result<Vec<f32>, EmbedError> = __usage_guard
        .run(move || {
            ::my_usage::__private::return_edge!(Result < Vec < f32 >, EmbedError >);
            {
                let tokens = tokenize(text)?;
                Ok(model::embed(&tokens))
            }
        });
    __usage_guard
        .finish(
            ::my_usage::__private::verdict!(& __usage_ret),
            ::my_usage::__private::report!(& __usage_ret),
        );
    __usage_ret
}
