use usage_runtime::track_usage;

#[track_usage(operation = "chat", tennant = "acme")]
fn chat() {}

fn main() {
    chat();
}
