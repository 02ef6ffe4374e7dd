use usage_runtime::UsageReport;

#[derive(UsageReport)]
enum Reply {
    Chat {
        #[usage(output_tokens)]
        completion_tokens: u32,
    },
    Embedding {
        #[usage(input_tokens)]
        prompt_tokens: Option<f64>,
    },
}

fn main() {}
