use usage_runtime::track_usage;

struct Account;

#[track_usage(user = account)]
fn chat(account: Account) {
    let _ = account;
}

fn main() {
    chat(Account);
}
