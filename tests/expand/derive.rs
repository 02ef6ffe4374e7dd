/// A provider's usage block.
#[derive(UsageReport)]
struct Usage {
    #[usage(input_tokens)]
    prompt_tokens: u32,
    #[usage(output_tokens)]
    completion_tokens: Option<u64>,
}

/// A reply that carries the block and the model.
#[derive(UsageReport)]
struct Reply<'a> {
    #[usage(model)]
    model: &'a str,
    #[usage(flatten)]
    usage: Usage,
}

/// Each variant reports its own fields.
#[derive(UsageReport)]
enum Outcome {
    Chat(#[usage(flatten)] Reply<'static>),
    Embedding {
        #[usage(input_tokens, cached_input_tokens)]
        tokens: u32,
    },
    Failed,
}
