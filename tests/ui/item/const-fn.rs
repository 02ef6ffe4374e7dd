use usage_runtime::track_usage;

#[track_usage]
const fn answer() -> u32 {
    42
}

fn main() {
    let _ = answer();
}
