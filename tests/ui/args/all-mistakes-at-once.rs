use usage_runtime::track_usage;

#[track_usage(operation = 42, colour = "red", tenant = "a", tenant = "b", skip)]
fn chat() -> u32 {
    1
}

fn main() {
    // The fn is still emitted: this call compiles, so the only errors are the attribute's.
    let _: u32 = chat();
}
