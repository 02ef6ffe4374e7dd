use super::*;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

const FILE: &str = r#"
[budgets.chat-monthly]
limit = "cost"
scope = "tenant"
operations = ["chat", "chat.stream"]
window = "month"
default = "100.00"
alerts = [95, 80, 100, 80]
when_unavailable = "closed"

[budgets.chat-monthly.tenants]
acme = "500.5"

[budgets.tokens-daily]
limit = "tokens"
scope = "user"
window = "day"
default = 1000000

[budgets.calls-rolling]
limit = "calls"
scope = "global"
window = "24h"
default = 10
"#;

#[test]
fn budgets_read_with_their_limits_scopes_and_windows() {
    let budgets = Budgets::from_toml(FILE).unwrap();
    let chat = budgets.get("chat-monthly").unwrap();
    assert_eq!(
        (chat.limit, chat.scope, chat.window),
        (Limit::Cost, Scope::Tenant, Window::Month)
    );
    assert_eq!(chat.default, 100_000_000_000, "USD held in nano-USD");
    assert_eq!(chat.limit_for(Some("acme")), 500_500_000_000);
    assert_eq!(chat.limit_for(Some("globex")), 100_000_000_000);
    assert_eq!(chat.limit_for(None), 100_000_000_000);
    assert_eq!(chat.alerts, [80, 95, 100]);
    assert_eq!(chat.when_unavailable, WhenUnavailable::Closed);
    assert!(chat.applies_to("chat.stream") && !chat.applies_to("embed"));
    let tokens = budgets.get("tokens-daily").unwrap();
    assert_eq!(
        (tokens.limit, tokens.scope, tokens.default),
        (Limit::Tokens, Scope::User, 1_000_000)
    );
    assert_eq!(tokens.when_unavailable, WhenUnavailable::Open);
    assert!(tokens.applies_to("anything"));
    let calls = budgets.get("calls-rolling").unwrap();
    assert_eq!(calls.window, Window::Rolling { hours: 24 });
    assert_eq!(budgets.iter().count(), 3);
}

#[test]
fn windows_start_and_reset_at_their_boundaries() {
    // (window, the time, when its window started, when it resets)
    let rolling = Window::Rolling { hours: 24 };
    for (window, time, start, reset) in [
        (
            Window::Month,
            "2026-01-31T23:59:59.999999Z",
            "2026-01-01T00:00:00Z",
            "2026-02-01T00:00:00Z",
        ),
        (
            Window::Month,
            "2026-02-01T00:00:00Z",
            "2026-02-01T00:00:00Z",
            "2026-03-01T00:00:00Z",
        ),
        (
            Window::Month,
            "2026-12-15T12:00:00Z",
            "2026-12-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ),
        (
            Window::Day,
            "2026-03-01T00:00:00Z",
            "2026-03-01T00:00:00Z",
            "2026-03-02T00:00:00Z",
        ),
        (
            Window::Day,
            "2026-02-28T23:59:59Z",
            "2026-02-28T00:00:00Z",
            "2026-03-01T00:00:00Z",
        ),
        // The last 24 whole hours up to the end of the current one.
        (
            rolling,
            "2026-03-02T10:30:00Z",
            "2026-03-01T11:00:00Z",
            "2026-03-02T11:00:00Z",
        ),
        (
            Window::Rolling { hours: 1 },
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:00:00Z",
            "2026-03-02T11:00:00Z",
        ),
    ] {
        let seen = (window.start(at(time)), window.reset(at(time)));
        assert_eq!(seen, (at(start), at(reset)), "{window:?} at {time}");
    }
}

#[test]
fn malformed_files_name_the_budget_and_the_key() {
    let base = "[budgets.b]\nlimit = \"cost\"\nscope = \"tenant\"\nwindow = \"month\"\n";
    for (extra, key) in [
        ("default = 100", "default"),
        ("default = \"1.0000000001\"", "default"),
        ("default = \"1\"\nalerts = [0]", "alerts"),
        ("default = \"1\"\nalerts = [101]", "alerts"),
        (
            "default = \"1\"\nwhen_unavailable = \"maybe\"",
            "when_unavailable",
        ),
        ("default = \"1\"\noperations = \"chat\"", "operations"),
        ("default = \"1\"\nlimits = \"x\"", "limits"),
        (
            "default = \"1\"\n[budgets.b.tenants]\nacme = 5",
            "tenants.acme",
        ),
        ("", "default"),
    ] {
        let err = Budgets::from_toml(&format!("{base}{extra}\n")).unwrap_err();
        assert_eq!(
            (err.budget.as_deref(), err.key.as_deref()),
            (Some("b"), Some(key)),
            "{extra}: {err}"
        );
        assert!(err.to_string().contains("budget `b`"), "{err}");
    }
    let head = |limit: &str, scope: &str, window: &str, default: &str| {
        format!("[budgets.b]\nlimit = \"{limit}\"\nscope = \"{scope}\"\nwindow = \"{window}\"\ndefault = {default}")
    };
    for (text, key) in [
        (head("money", "tenant", "day", "1"), "limit"),
        (head("calls", "team", "day", "1"), "scope"),
        (head("calls", "user", "0h", "1"), "window"),
        (head("calls", "user", "week", "1"), "window"),
        (head("calls", "user", "day", "-1"), "default"),
    ] {
        let err = Budgets::from_toml(&text).unwrap_err();
        assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
    }
    assert!(Budgets::from_toml("[limits]")
        .unwrap_err()
        .to_string()
        .contains("budgets"));
    assert!(Budgets::from_toml("[budgets").is_err());
    let missing = Budgets::from_file("/nonexistent/budgets.toml").unwrap_err();
    assert!(missing.to_string().contains("cannot read"), "{missing}");
}
