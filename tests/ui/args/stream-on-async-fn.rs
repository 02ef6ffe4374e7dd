use usage_runtime::track_usage;

#[track_usage(stream)]
async fn words() -> Vec<String> {
    Vec::new()
}

fn main() {}
