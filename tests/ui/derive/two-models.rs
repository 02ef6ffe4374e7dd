use usage_runtime::UsageReport;

#[derive(UsageReport)]
struct Response {
    #[usage(model)]
    model: String,
    #[usage(model)]
    fallback_model: String,
    #[usage(output_tokens)]
    tokens: u32,
}

fn main() {}
