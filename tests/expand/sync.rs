/// Adds two numbers.
#[track_usage(operation = "add", tenant = org)]
fn add(org: &str, a: u32, b: u32) -> u32 {
    #![allow(unused_variables)]
    a + b
}
