impl Repo {
    fn find(&self, id: u32) -> Option<Row> {
        ::usage_runtime::__private::operation!("find", "Repo::find", true);
        let mut __usage_guard = ::usage_runtime::__private::CallGuard::start(
            &__USAGE_OPERATION,
            ::core::option::Option::Some(::usage_runtime::__private::Dimensions {
                tenant: ::usage_runtime::__private::tenant(&(self.org)),
                ..::usage_runtime::__private::Dimensions::NONE
            }),
        );
        let __usage_ret: Option<Row> = __usage_guard
            .run(move || {
                ::usage_runtime::__private::return_edge!(Option < Row >);
                { self.rows.get(&id).cloned() }
            });
        __usage_guard
            .finish(
                ::usage_runtime::__private::verdict!(& __usage_ret),
                ::usage_runtime::__private::report!(& __usage_ret),
            );
        __usage_ret
    }
    fn helper(&self) {}
}
