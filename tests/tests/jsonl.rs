//! The JSON lines sink: one record per line, appended, readable back as `UsageRecord`s.

use usage_runtime::sink::{JsonLinesSink, Sink};
use usage_runtime::{error::DbStep, track_usage, Error, Outcome, Tracker};

#[track_usage(operation = "jsonl", tenant = "acme", fields(n = n))]
fn work(n: u32) -> Result<u32, String> {
    if n == 3 {
        Err("three \u{0} is bad 🦀".into())
    } else {
        Ok(n)
    }
}

#[test]
fn records_are_appended_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.jsonl");
    let guard = Tracker::builder()
        .sink(JsonLinesSink::create(&path).unwrap())
        .install()
        .unwrap();
    for n in 0..10 {
        let _ = work(n);
    }
    drop(guard);
    let records = tests::jsonl_records(&path);
    assert_eq!(records.len(), 10);
    let failed = records
        .iter()
        .find(|r| r.outcome == Outcome::Error)
        .unwrap();
    assert_eq!(
        failed.error_message.as_deref(),
        Some("three \u{0} is bad 🦀")
    );
    assert_eq!(failed.attributes["n"], 3);
    let text = std::fs::read_to_string(&path).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for key in [
        "id",
        "operation",
        "started_at",
        "duration_us",
        "outcome",
        "tenant_id",
    ] {
        assert!(first.get(key).is_some(), "missing {key} in {first}");
    }

    // A second sink on the same file appends.
    let mut again = JsonLinesSink::create(&path).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(again.write(&records[..2]))
        .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 12);
}

#[test]
fn an_unwritable_path_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = JsonLinesSink::create(dir.path().join("missing/usage.jsonl")).unwrap_err();
    match err {
        Error::Database { step, target, .. } => {
            assert_eq!(step, DbStep::Connect);
            assert!(target.ends_with("missing/usage.jsonl"), "{target}");
        }
        other => panic!("expected a named error, got {other:?}"),
    }
}
