//! What `Durability::SpoolFirst` costs: tracked calls per second until every record is written,
//! with records kept in memory (the default) and with every record appended to the disk spool
//! first, under each fsync policy, in one run. The sink discards, so the figures are the
//! tracker's own.
//!
//! ```sh
//! cargo bench -p usage-runtime --bench durability
//! ```

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::Discard;
use usage_runtime::{spool::Fsync, track_usage, tracker::Durability, Tracker};

#[track_usage(operation = "bench.durability", tenant = "acme")]
fn call(n: u64) -> u64 {
    n
}

const CALLS: u64 = 200_000;

fn run(name: &str, durability: Option<(Durability, Fsync)>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = Tracker::builder().sink(Discard).queue_capacity(1 << 18);
    if let Some((durability, fsync)) = durability {
        builder = builder
            .spool_dir(dir.path())
            .spool_fsync(fsync)
            .durability(durability);
    }
    let guard = builder.install().unwrap();
    let started = Instant::now();
    for n in 0..CALLS {
        call(n);
    }
    guard.flush_blocking().unwrap();
    let rate = CALLS as f64 / started.elapsed().as_secs_f64();
    let health = guard.health();
    assert_eq!(health.written, CALLS, "{health:?}");
    drop(guard);
    println!("{name:<38} {rate:>10.0} calls/s written");
    rate
}

fn main() {
    if !common::benching() {
        return;
    }
    let memory = run("Memory (default)", None);
    for (name, fsync) in [
        (
            "SpoolFirst, Fsync::Interval(200 ms)",
            Fsync::Interval(Duration::from_millis(200)),
        ),
        ("SpoolFirst, Fsync::Always", Fsync::Always),
        ("SpoolFirst, Fsync::Never", Fsync::Never),
    ] {
        let rate = run(name, Some((Durability::SpoolFirst, fsync)));
        println!(
            "{:<38} {:>9.2}x the default's throughput",
            "",
            rate / memory
        );
    }
}
