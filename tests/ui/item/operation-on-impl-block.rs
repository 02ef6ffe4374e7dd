use usage_runtime::track_usage;

struct Service;

#[track_usage(operation = "service")]
impl Service {
    fn call(&self) {}
}

fn main() {
    Service.call();
}
