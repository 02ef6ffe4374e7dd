use usage_runtime::track_usage;

#[track_usage(fields(model = 1, model = 2))]
fn chat() {}

fn main() {
    chat();
}
