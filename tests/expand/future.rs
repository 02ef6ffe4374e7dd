#[track_usage(operation = "fetch", ok_if = |r: &Result<u16, Error>| r.is_ok())]
fn fetch(url: &str) -> impl Future<Output = Result<u16, Error>> + Send + '_ {
    async move { client::get(url).await }
}
