use usage_runtime::track_usage;

struct Reply {
    input: u32,
}

#[track_usage(tokens = |reply: &Reply| reply.input)]
fn complete() -> Reply {
    Reply { input: 1 }
}

fn main() {
    complete();
}
