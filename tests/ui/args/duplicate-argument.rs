use usage_runtime::track_usage;

#[track_usage(operation = "chat", tenant = "a", operation = "talk")]
fn chat() {}

fn main() {
    chat();
}
