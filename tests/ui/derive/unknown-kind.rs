use usage_runtime::UsageReport;

#[derive(UsageReport)]
struct Usage {
    #[usage(prompt_tokens)]
    prompt_tokens: u32,
    #[usage(output_tokens)]
    completion_tokens: u32,
}

fn main() {}
