use usage_runtime::UsageReport;

// One mistake in the derive is reported once: the type still implements `UsageReport`, so the
// code that relies on it compiles without errors of its own.
#[derive(UsageReport)]
struct Usage {
    #[usage(prompt_tokens)]
    prompt_tokens: u32,
}

fn total(report: &impl UsageReport) -> Option<u64> {
    report.usage().input_tokens
}

fn main() {
    let usage = Usage { prompt_tokens: 1 };
    let _ = total(&usage);
    let _ = usage.usage();
}
