impl Repo {
    fn find(&self, id: u32) -> Option<Row> {
        static __USAGE_OPERATION: ::usage_runtime::__private::Operation = ::usage_runtime::__private::Operation::new(
            "find",
            ::core::concat!(::core::module_path!(), "::", "Repo::find"),
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
                tenant: ::usage_runtime::__private::tenant(&(self.org)),
                user: ::core::option::Option::None,
                session: ::core::option::Option::None,
                fields: ::usage_runtime::__private::fields([]),
            }),
        );
        #[allow(clippy::redundant_closure_call)]
        let __usage_ret: Option<Row> = (move || { self.rows.get(&id).cloned() })();
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
    fn helper(&self) {}
}
