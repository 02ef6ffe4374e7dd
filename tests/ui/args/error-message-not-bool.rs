use usage_runtime::track_usage;

#[track_usage(error_message = "no")]
fn chat() {}

fn main() {
    chat();
}
