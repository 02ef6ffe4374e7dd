//! The `usage` binary, run for real against SQLite, PostgreSQL and MySQL.

use std::process::Command;

use usage_runtime::sink::{MySqlSink, PostgresSink, Sink, SqlConfig, SqliteSink};

fn usage(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_usage"))
        .args(args)
        .env_remove("USAGE_DATABASE_URL")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Tests that install the process-wide tracker take turns.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The JSON report grouped by tenant must add up to the records, and CSV and table agree.
fn check_report(url: &str, prefix: &str, records: &[usage_runtime::UsageRecord]) {
    let report = |args: &[&str]| {
        let database = ["report", "--database-url", url, "--table-prefix", prefix];
        usage(&[&database[..], args].concat())
    };
    let (code, out, err) = report(&["--by", "tenant,month", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let calls: u64 = rows.iter().map(|r| r["calls"].as_u64().unwrap()).sum();
    assert_eq!(calls, records.len() as u64);
    // Exactly the grouping columns and the figures, nothing missing and nothing else.
    let mut keys: Vec<&str> = rows[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let expected = "audio_input_tokens audio_output_tokens bucket cache_creation_1h_input_tokens \
                    cache_creation_input_tokens cached_input_tokens calls cost_nano_usd errors \
                    input_tokens output_tokens p50_ms p95_ms p99_ms reasoning_tokens tenant";
    assert_eq!(
        keys,
        expected.split_whitespace().collect::<Vec<_>>(),
        "{}",
        rows[0]
    );
    let acme: u64 = rows
        .iter()
        .filter(|r| r["tenant"] == "acme")
        .map(|r| r["calls"].as_u64().unwrap())
        .sum();
    let expected = records
        .iter()
        .filter(|r| r.tenant_id.as_deref() == Some("acme"))
        .count();
    assert_eq!(acme, expected as u64);

    let (code, out, _) = report(&["--by", "outcome", "--format", "csv"]);
    assert_eq!(code, 0);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        "outcome,calls,errors,input_tokens,output_tokens,cost_nano_usd,p50_ms,p95_ms,p99_ms,\
         cached_input_tokens,cache_creation_input_tokens,cache_creation_1h_input_tokens,\
         audio_input_tokens,reasoning_tokens,audio_output_tokens"
    );
    assert_eq!(lines.count(), 4, "{out}");

    let (code, out, _) = report(&["--tenant", "acme"]);
    assert_eq!(code, 0);
    assert!(out.contains(&expected.to_string()), "{out}");
}

/// `usage reprice` with a table pricing only gpt-4o: a dry run shows the change and writes
/// nothing; the run writes it, after which the rollups and the records agree on the new total;
/// a second run finds nothing to change. Records of other models are kept as they were.
fn check_reprice(url: &str, prefix: &str, records: &[usage_runtime::UsageRecord]) {
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.toml");
    std::fs::write(
        &prices,
        "[models.\"gpt-4o\"]\ninput = \"2.50\"\noutput = \"10.00\"\n",
    )
    .unwrap();
    let pricing = usage_runtime::Pricing::from_file(&prices).unwrap();
    let prices = prices.to_str().unwrap();
    let reprice = |extra: &[&str]| {
        let args = [
            "reprice",
            "--database-url",
            url,
            "--table-prefix",
            prefix,
            "--pricing",
            prices,
        ];
        let (code, out, err) = usage(&[&args[..], extra].concat());
        assert_eq!(code, 0, "{err}");
        out
    };
    let total_cost = |extra: &[&str]| -> i64 {
        let args = [
            "report",
            "--database-url",
            url,
            "--table-prefix",
            prefix,
            "--format",
            "json",
        ];
        let (code, out, err) = usage(&[&args[..], extra].concat());
        assert_eq!(code, 0, "{err}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        rows.iter()
            .map(|r| r["cost_nano_usd"].as_i64().unwrap())
            .sum()
    };
    // What it should do, worked out record by record.
    let (mut changed, mut without_price, mut expected) = (0u64, 0u64, 0i64);
    for record in records {
        match pricing.cost(&record.token_usage(), record.started_at) {
            Some(cost) => {
                changed += u64::from(
                    record.cost_nano_usd != Some(cost.nano_usd) || record.price_id.is_none(),
                );
                expected += cost.nano_usd;
            }
            None => {
                without_price += u64::from(record.model.is_some());
                expected += record.cost_nano_usd.unwrap_or(0);
            }
        }
    }
    let before = total_cost(&[]);
    let dry: serde_json::Value =
        serde_json::from_str(&reprice(&["--dry-run", "--format", "json"])).unwrap();
    assert_eq!(dry["written"], false);
    assert_eq!(dry["records_without_price"], without_price);
    let rows = dry["rows"].as_array().unwrap();
    assert!(rows.iter().all(|row| row["model"] == "gpt-4o"), "{rows:?}");
    let counted: u64 = rows
        .iter()
        .map(|row| row["records"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, changed);
    assert!(changed > 0);
    assert_eq!(total_cost(&[]), before, "a dry run writes nothing");

    let table = reprice(&[]);
    assert!(table.contains(&format!("repriced {changed} of")), "{table}");
    assert_eq!(total_cost(&[]), expected, "the rollups");
    assert_eq!(total_cost(&["--distinct-users"]), expected, "the records");
    let again: serde_json::Value = serde_json::from_str(&reprice(&["--format", "json"])).unwrap();
    assert_eq!(
        again["rows"],
        serde_json::json!([]),
        "nothing left to change"
    );
}

#[test]
fn sqlite_report_operations_verify_migrate_prune() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("usage.db").display());
    let records = tests::random_records(2000, 51);
    runtime().block_on(async {
        let mut sink = SqliteSink::connect(&url).await.unwrap();
        sink.write(&records).await.unwrap();
    });
    check_report(&url, "", &records);
    check_reprice(&url, "", &records);

    let (code, out, err) = usage(&["verify", "--database-url", &url]);
    assert_eq!(code, 0, "{err}");
    for step in ["connect", "migrate", "write", "read", "verified"] {
        assert!(out.contains(step), "{step} missing in {out}");
    }
    let (code, out, _) = usage(&["migrate", "--database-url", &url]);
    assert_eq!((code, out.trim()), (0, "the schema is up to date"));

    // Prune keeps the rollups: the report still counts every call.
    let (code, out, err) = usage(&["prune", "--database-url", &url, "--older-than", "1d"]);
    assert_eq!(code, 0, "{err}");
    let deleted: u64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let old = records
        .iter()
        .filter(|r| {
            // Whole hours: the cutoff is the start of the hour a day ago.
            let cutoff =
                usage_runtime::report::hour_start(chrono::Utc::now() - chrono::Duration::days(1));
            r.started_at < cutoff
        })
        .count();
    assert_eq!(deleted, old as u64);
    assert!(deleted > 0);
    let (_, out, _) = usage(&["report", "--database-url", &url, "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["calls"], 2000, "from the rollups after pruning");
}

#[test]
fn operations_mark_silent_ones() {
    use usage_runtime::{track_usage, Tracker};

    #[track_usage(operation = "cli.called")]
    fn called() {}

    #[track_usage(operation = "cli.silent")]
    #[allow(dead_code)]
    fn silent() {}

    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("usage.db").display());
    runtime().block_on(async {
        let guard = Tracker::builder()
            .service("cli-test")
            .sink(SqliteSink::connect(&url).await.unwrap())
            .install()
            .unwrap();
        called();
        guard.shutdown().await.unwrap();
    });
    let (code, out, err) = usage(&[
        "operations",
        "--database-url",
        &url,
        "--since",
        "1h",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let calls = |name: &str| rows.iter().find(|r| r["operation"] == name).unwrap()["calls"].clone();
    assert_eq!(calls("cli.called"), 1);
    assert_eq!(calls("cli.silent"), 0);
    let (_, table, _) = usage(&["operations", "--database-url", &url]);
    assert!(table.contains("SILENT"), "{table}");
}

#[test]
fn spool_status_and_replay() {
    use usage_runtime::{track_usage, Tracker};

    #[track_usage(operation = "cli.spooled")]
    fn spooled() {}

    #[track_usage(operation = "cli.refused")]
    fn refused() {}

    #[derive(Debug)]
    struct Down;
    impl Sink for Down {
        async fn write(
            &mut self,
            _: &[usage_runtime::UsageRecord],
        ) -> Result<(), usage_runtime::Error> {
            Err(usage_runtime::Error::Database {
                step: usage_runtime::error::DbStep::Connect,
                target: "down".into(),
                source: "refused".into(),
                kind: usage_runtime::error::FailureKind::Transient,
            })
        }
    }

    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let guard = Tracker::builder()
        .sink(Down)
        .spool_dir(&spool)
        .max_retries(0)
        .install()
        .unwrap();
    for _ in 0..30 {
        spooled();
    }
    refused();
    drop(guard);
    let spool_dir = spool.to_str().unwrap();
    let spool_status = || usage(&["spool", "status", "--dir", spool_dir, "--format", "json"]);
    let (code, out, err) = spool_status();
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["records"], 31);

    // The database refuses one of them (a trigger standing in for a constraint).
    let url = format!("sqlite://{}", dir.path().join("usage.db").display());
    let (code, _, err) = usage(&["migrate", "--database-url", &url]);
    assert_eq!(code, 0, "{err}");
    let db = dir.path().join("usage.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use sqlx::Connection as _;
        let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON usage_records \
             WHEN NEW.operation = 'cli.refused' \
             BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END",
        )
        .execute(&mut connection)
        .await
        .unwrap();
    });
    assert!(db.exists());
    let (code, out, err) = usage(&[
        "spool",
        "replay",
        "--dir",
        spool.to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 30"), "{out}");
    let quarantine = spool.join("quarantine.jsonl");
    assert!(
        out.contains("1 rejected by the database") && out.contains("quarantine.jsonl"),
        "{out}"
    );
    let kept = std::fs::read_to_string(&quarantine).unwrap();
    assert_eq!(kept.lines().count(), 1, "{kept}");
    assert!(
        kept.contains("cli.refused") && kept.contains("refused by a test trigger"),
        "{kept}"
    );
    let (_, out, _) = spool_status();
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["records"], 0);
}

#[test]
fn bad_usage_exits_2_and_failures_exit_1_without_secrets() {
    let (code, _, err) = usage(&["report", "--bogus"]);
    assert_eq!(code, 2, "{err}");
    for (flag, value, says) in [
        ("--write-timeout", "0s", "must be above zero"),
        ("--ack-wait", "200ms", "at least 1s"),
    ] {
        let (code, _, err) = usage(&[
            "ingest",
            "--nats",
            "nats://127.0.0.1:1",
            "--database-url",
            "sqlite://x.db",
            flag,
            value,
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(says), "{err}");
    }
    let (code, _, err) = usage(&[
        "report",
        "--database-url",
        "sqlite://x.db",
        "--since",
        "soon",
    ]);
    assert_eq!(code, 2, "bad usage");
    assert!(err.contains("neither an age"), "{err}");
    for (flag, value) in [
        ("--since", "99999999999999999d"),
        ("--by", "hour,day"),
        ("--by", "colour"),
        ("--table-prefix", "a-b"),
    ] {
        let args = ["report", "--database-url", "sqlite://x.db", flag, value];
        let (code, _, err) = usage(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    // The URL from the environment is never shown by --help.
    let output = Command::new(env!("CARGO_BIN_EXE_usage"))
        .args(["report", "--help"])
        .env("USAGE_DATABASE_URL", "postgres://app:topsecret@db/x")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&output.stdout).contains("topsecret"));
    let (code, _, err) = usage(&[
        "verify",
        "--database-url",
        "postgres://app:hunter2@127.0.0.1:1/db",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("connect failed") && !err.contains("hunter2"),
        "{err}"
    );
    let (code, out, _) = usage(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Examples:"));
}

#[test]
fn postgres_report_and_verify() {
    let Some(url) = tests::postgres_url() else {
        return;
    };
    report_and_verify(&url, "pg_cli_", 53);
}

#[test]
fn mysql_report_and_verify() {
    let Some(url) = tests::mysql_url() else {
        return;
    };
    report_and_verify(&url, "my_cli_", 57);
}

/// Random records written to the database server at `url` under `prefix`, then reported on and
/// verified by the command.
fn report_and_verify(url: &str, prefix: &str, seed: u64) {
    let records = tests::random_records(1500, seed);
    runtime().block_on(async {
        let config = SqlConfig::new().table_prefix(prefix).unwrap();
        if url.starts_with("postgres") {
            tests::drop_postgres_tables(url, prefix).await;
            let mut sink = PostgresSink::connect_with(url, config).await.unwrap();
            sink.write(&records).await.unwrap();
        } else {
            tests::drop_mysql_tables(url, prefix).await;
            let mut sink = MySqlSink::connect_with(url, config).await.unwrap();
            sink.write(&records).await.unwrap();
        }
    });
    check_report(url, prefix, &records);
    check_reprice(url, prefix, &records);
    let (code, out, err) = usage(&["verify", "--database-url", url, "--table-prefix", prefix]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("authenticate"), "{out}");
}

/// `cargo run -p usage-cli -- <args>` (the README's way to try the command) needs the package to
/// name its default binary, since it also holds `usage-load`.
#[test]
fn cargo_run_picks_the_usage_binary() {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "usage-cli")
        .unwrap();
    assert_eq!(package["default_run"], "usage");
}
