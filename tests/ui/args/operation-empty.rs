use usage_runtime::track_usage;

#[track_usage(operation = "")]
fn chat() {}

fn main() {
    chat();
}
