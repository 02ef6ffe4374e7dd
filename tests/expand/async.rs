#[track_usage(operation = "chat", tenant = req.org, user = req.user, fields(model = req.model))]
async fn chat(req: ChatRequest) -> ChatResponse {
    model::complete(&req).await
}
