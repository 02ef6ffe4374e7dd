use usage_runtime::track_usage;

fn is_ok(value: &String) -> bool {
    !value.is_empty()
}

#[track_usage(ok_if = is_ok)]
fn count() -> u32 {
    1
}

fn main() {
    count();
}
