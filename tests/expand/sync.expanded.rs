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
    let __usage_guard = ::usage_runtime::__private::CallGuard::start(
        &__USAGE_OPERATION,
        ::core::option::Option::Some(::usage_runtime::__private::Dimensions {
            tenant: ::usage_runtime::__private::tenant(&(org)),
            user: ::core::option::Option::None,
            session: ::core::option::Option::None,
            fields: ::usage_runtime::__private::fields([]),
        }),
    );
    #[allow(clippy::redundant_closure_call)]
    let __usage_ret: u32 = (move || { a + b })();
    __usage_guard
        .finish({
            #[allow(unused_imports)]
            use ::usage_runtime::__private::{
                ViaClassify as _, ViaDefault as _, ViaResult as _,
            };
            (&&&::usage_runtime::__private::Probe(&__usage_ret)).__usage_verdict()
        });
    __usage_ret
}
