fn fetch(url: &str) -> impl Future<Output = Result<u16, Error>> + Send + '_ {
    ::usage_runtime::__private::operation!("fetch", "fetch", true);
    let __usage_dims = ::core::option::Option::None;
    let __usage_future = ::usage_runtime::__private::call(
        &__USAGE_OPERATION,
        ::core::option::Option::as_ref(&__usage_dims),
        move || {
            ::usage_runtime::__private::return_edge!(_);
            { async move { client::get(url).await } }
        },
    );
    async move {
        let __usage_guard = ::usage_runtime::__private::CallGuard::start(
            &__USAGE_OPERATION,
            __usage_dims,
        );
        let (
            __usage_guard,
            __usage_ret,
        ): (::usage_runtime::__private::CallGuard, Result<u16, Error>) = ::usage_runtime::__private::Guarded::new(
                __usage_guard,
                __usage_future,
            )
            .await;
        __usage_guard
            .finish(
                ::usage_runtime::__private::ok_if(
                    ::usage_runtime::__private::test(
                        &__usage_ret,
                        |r: &Result<u16, Error>| r.is_ok(),
                    ),
                    ::usage_runtime::__private::verdict!(& __usage_ret),
                    ::usage_runtime::__private::type_name_of_val(&__usage_ret),
                ),
                ::usage_runtime::__private::report!(& __usage_ret),
            );
        __usage_ret
    }
}
