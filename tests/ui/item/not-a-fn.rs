use usage_runtime::track_usage;

#[track_usage]
struct Handler;

fn main() {
    let _ = Handler;
}
