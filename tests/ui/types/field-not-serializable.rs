use usage_runtime::track_usage;

struct Secret;

#[track_usage(fields(secret = secret))]
fn chat(secret: Secret) {
    let _ = secret;
}

fn main() {
    chat(Secret);
}
