async fn chat(req: ChatRequest) -> ChatResponse {
    ::usage_runtime::__private::operation!("chat", "chat", true);
    let __usage_guard = ::usage_runtime::__private::CallGuard::start(
        &__USAGE_OPERATION,
        ::core::option::Option::Some(::usage_runtime::__private::Dimensions {
            tenant: ::usage_runtime::__private::tenant(&(req.org)),
            user: ::usage_runtime::__private::id(&(req.user)),
            fields: ::usage_runtime::__private::fields([
                ("model", ::usage_runtime::__private::field(&(req.model))),
            ]),
            ..::usage_runtime::__private::Dimensions::NONE
        }),
    );
    let (
        __usage_guard,
        __usage_ret,
    ): (::usage_runtime::__private::CallGuard, ChatResponse) = ::usage_runtime::__private::Guarded::new(
            __usage_guard,
            async move {
                ::usage_runtime::__private::return_edge!(ChatResponse);
                { model::complete(&req).await }
            },
        )
        .await;
    __usage_guard
        .finish(
            ::usage_runtime::__private::verdict!(& __usage_ret),
            ::usage_runtime::__private::report!(& __usage_ret),
        );
    __usage_ret
}
