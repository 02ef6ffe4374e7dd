#[track_usage(tenant = self.org)]
impl Repo {
    fn find(&self, id: u32) -> Option<Row> {
        self.rows.get(&id).cloned()
    }

    #[track_usage(skip)]
    fn helper(&self) {}
}
