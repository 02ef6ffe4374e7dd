use usage_runtime::UsageReport;

#[derive(UsageReport)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
}

fn main() {}
