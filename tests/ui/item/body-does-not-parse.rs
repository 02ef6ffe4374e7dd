use usage_runtime::track_usage;

#[track_usage]
fn answer() -> u32 {
    let x = ;
    x
}

fn main() {
    let _ = answer();
}
