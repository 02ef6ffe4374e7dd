use usage_runtime::track_usage;

#[track_usage(ok_if = |r: &u32| *r > 0, error_if = |r: &u32| *r == 0)]
fn count() -> u32 {
    1
}

fn main() {
    count();
}
