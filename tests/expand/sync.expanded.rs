/// Adds two numbers.
fn add(org: &str, a: u32, b: u32) -> u32 {
    #![allow(unused_variables)]
    ::usage_runtime::__private::operation!("add", "add", true);
    let mut __usage_guard = ::usage_runtime::__private::CallGuard::start(
        &__USAGE_OPERATION,
        ::core::option::Option::Some(::usage_runtime::__private::Dimensions {
            tenant: ::usage_runtime::__private::tenant(&(org)),
            ..::usage_runtime::__private::Dimensions::NONE
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
