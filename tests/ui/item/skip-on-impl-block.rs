use usage_runtime::track_usage;

struct Service;

#[track_usage(skip)]
impl Service {
    fn call(&self) {}
}

fn main() {
    Service.call();
}
