/// Adds two numbers.
fn add(org: &str, a: u32, b: u32) -> u32 {
    #![allow(unused_variables)]
    static __USAGE_OPERATION: ::usage_runtime::__private::Operation = ::usage_runtime::__private::Operation::new(
        "add",
        ::core::concat!(::core::module_path!(), "::", "add"),
        ::core::file!(),
        ::core::line!(),
        true,
    );
    ::usage_runtime::__private::inventory::submit! {
        ::usage_runtime::__private::Registration(& __USAGE_OPERATION)
    }
    let mut __usage_guard = ::usage_runtime::__private::CallGuard::start(
        &__USAGE_OPERATION,
        ::core::option::Option::Some(::usage_runtime::__private::Dimensions {
            tenant: ::usage_runtime::__private::tenant(&(org)),
            user: ::core::option::Option::None,
            session: ::core::option::Option::None,
            model: ::core::option::Option::None,
            fields: ::usage_runtime::__private::fields([]),
        }),
    );
    let __usage_ret: u32 = __usage_guard
        .run(move || {
            ::usage_runtime::__private::return_edge!(u32);
            { a + b }
        });
    __usage_guard
        .finish(
            ::usage_runtime::__private::verdict!(& __usage_ret),
            ::usage_runtime::__private::report!(& __usage_ret),
        );
    __usage_ret
}
