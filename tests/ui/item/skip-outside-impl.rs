use usage_runtime::track_usage;

#[track_usage(skip)]
fn helper() {}

fn main() {
    helper();
}
