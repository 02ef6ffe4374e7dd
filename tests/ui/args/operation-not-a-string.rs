use usage_runtime::track_usage;

const NAME: &str = "chat";

#[track_usage(operation = NAME)]
fn chat() {}

fn main() {
    chat();
}
