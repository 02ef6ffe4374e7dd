use usage_runtime::UsageReport;

#[derive(UsageReport)]
struct Inner {
    #[usage(input_tokens)]
    input: u32,
}

#[derive(UsageReport)]
struct Response {
    #[usage(flatten, input_tokens)]
    usage: Inner,
}

fn main() {}
