use usage_runtime::UsageReport;

#[derive(UsageReport)]
struct Response {
    #[usage(model)]
    model: u32,
    #[usage(output_tokens)]
    tokens: u32,
}

fn main() {}
