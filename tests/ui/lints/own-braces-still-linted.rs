// The fn's own braces are never linted (tests/tests/lints.rs); braces the user wrote inside the
// body still are.
#![deny(unused_braces)]

use usage_runtime::track_usage;

#[track_usage]
fn one_line(x: u32) -> u32 { let y = x + 1; { y } }

#[track_usage]
async fn one_line_async(x: u32) -> u32 { let y = x + 1; { y } }

fn main() {}
