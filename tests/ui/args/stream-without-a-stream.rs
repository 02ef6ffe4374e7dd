use usage_runtime::track_usage;

#[track_usage(stream)]
fn words() -> Vec<String> {
    Vec::new()
}

fn main() {
    let _ = words();
}
