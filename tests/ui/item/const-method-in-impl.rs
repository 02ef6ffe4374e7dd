use usage_runtime::track_usage;

struct Service;

#[track_usage]
impl Service {
    const fn limit(&self) -> u32 {
        10
    }

    fn call(&self) {}
}

fn main() {
    Service.call();
    let _ = Service.limit();
}
