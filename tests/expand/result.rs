#[track_usage(operation = "embed", error_message = false, crate = ::my_usage)]
fn embed(text: &str) -> Result<Vec<f32>, EmbedError> {
    let tokens = tokenize(text)?;
    Ok(model::embed(&tokens))
}
