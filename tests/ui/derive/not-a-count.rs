use usage_runtime::UsageReport;

#[derive(UsageReport)]
struct Usage {
    #[usage(input_tokens)]
    prompt_tokens: f32,
}

fn main() {}
