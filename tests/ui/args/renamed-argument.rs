use usage_runtime::track_usage;

#[track_usage(name = "chat")]
fn chat() {}

fn main() {
    chat();
}
