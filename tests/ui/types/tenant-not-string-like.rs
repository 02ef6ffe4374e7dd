use usage_runtime::track_usage;

struct Org {
    id: f64,
}

#[track_usage(tenant = org.id)]
fn chat(org: &Org) {}

fn main() {
    chat(&Org { id: 1.0 });
}
