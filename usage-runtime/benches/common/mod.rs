//! What the benches share. Each bench (these, and those of `usage-cli`, `examples` and `peers`)
//! includes this file with `#[path]` and uses a part of it.
#![allow(dead_code)]

use usage_runtime::sink::Sink;
use usage_runtime::{Error, UsageRecord};

/// Whether this is a bench run: `cargo bench` passes `--bench`, `cargo test --benches` passes
/// nothing, and a bench then returns at once.
pub(crate) fn benching() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// The number in the environment variable `name`, or `default` when it is unset or not a number.
pub(crate) fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// The tables a SQL sink makes (before its table prefix), so a bench can drop them and start
/// empty.
pub(crate) const SINK_TABLES: [&str; 6] = [
    "usage_records",
    "usage_schema_migrations",
    "usage_rollups_hourly",
    "usage_rollups_daily",
    "usage_operations",
    "usage_pruned",
];

/// A sink that discards every batch, so the figures are the tracker's own.
#[derive(Debug)]
pub(crate) struct Discard;

impl Sink for Discard {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        std::hint::black_box(batch.len());
        Ok(())
    }
}
