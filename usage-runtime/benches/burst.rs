//! Memory under a burst: 5,000,000 tracked calls while the sink is down, then the sink comes
//! back. Reports the process's peak resident memory against its size before the burst, and
//! checks that every call's record was written exactly once after the recovery (each call carries
//! its number; the sink keeps one bit per call).
//!
//! ```sh
//! cargo bench -p usage-runtime --bench burst
//! USAGE_BENCH_CALLS=1000000 cargo bench -p usage-runtime --bench burst
//! ```
//!
//! The tracker runs with the disk spool and `Overflow::Block`: while the sink fails, the worker
//! moves the queue to the spool, and a caller that finds the queue full waits for room instead
//! of dropping its record. Memory stays the queue's capacity plus the spool's buffers.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use usage_runtime::sink::Sink;
use usage_runtime::{track_usage, tracker::Overflow, Error, Tracker, UsageRecord};

/// A sink that fails (as a timed-out database would) while `down`, and otherwise marks each
/// call's number in a bitmap (one bit per call), counting any number seen twice.
#[derive(Debug, Clone, Default)]
struct Stallable {
    down: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    duplicates: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Sink for Stallable {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        if self.down.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Err(Error::Timeout(Duration::from_millis(5)));
        }
        let mut seen = self.seen.lock().unwrap();
        for record in batch {
            let n = record.attributes["n"]
                .as_u64()
                .expect("every call has its number");
            let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
            if seen[word] & bit != 0 {
                self.duplicates.fetch_add(1, Ordering::SeqCst);
            }
            seen[word] |= bit;
        }
        self.written.fetch_add(batch.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

#[track_usage(operation = "bench.burst", tenant = "acme", fields(n = n))]
fn call(n: u64) -> u64 {
    n
}

/// Resident and peak resident memory of this process, in KiB (Linux).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    if !common::benching() {
        return;
    }
    let calls: u64 = common::env_number("USAGE_BENCH_CALLS", 5_000_000);
    let dir = tempfile::tempdir().unwrap();
    let sink = Stallable::default();
    *sink.seen.lock().unwrap() = vec![0; calls.div_ceil(64) as usize];
    sink.down.store(true, Ordering::SeqCst);
    let guard = Tracker::builder()
        .sink(sink.clone())
        .spool_dir(dir.path())
        .spool_max_bytes(8 << 30)
        .overflow(Overflow::Block(Duration::from_secs(60)))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .install()
        .unwrap();
    let (before, _) = memory_kib();
    let capacity = usage_runtime::tracker::DEFAULT_QUEUE_CAPACITY;

    let started = Instant::now();
    for n in 0..calls {
        call(n);
    }
    let burst = started.elapsed();
    let during = guard.health();
    let (after_burst, peak_burst) = memory_kib();
    println!("memory after the burst: {after_burst} KiB resident, peak so far {peak_burst} KiB");
    println!(
        "{calls} calls in {:.2} s with the sink down: {} spooled, {} waiting in the queue, \
         {} dropped",
        burst.as_secs_f64(),
        during.spooled,
        during.queue_depth,
        during.dropped
    );

    sink.down.store(false, Ordering::SeqCst);
    let recovered = Instant::now();
    while sink.written.load(Ordering::SeqCst) < calls {
        assert!(
            recovered.elapsed() < Duration::from_secs(600),
            "not all written: {:?}",
            guard.health()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    guard.flush_blocking().unwrap();
    let health = guard.health();
    drop(guard);
    let written = sink.written.load(Ordering::SeqCst);
    let (_, peak) = memory_kib();
    println!(
        "sink back: {written} written in {:.2} s ({} replayed from the spool)",
        recovered.elapsed().as_secs_f64(),
        health.replayed
    );
    assert_eq!(written, calls, "every record written: {health:?}");
    assert_eq!(sink.duplicates.load(Ordering::SeqCst), 0, "none twice");
    let missing: u64 = sink
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|word| u64::from(64 - word.count_ones()))
        .sum::<u64>()
        - (calls.div_ceil(64) * 64 - calls);
    assert_eq!(missing, 0, "every call's number arrived");
    assert_eq!(health.dropped, 0, "{health:?}");
    println!(
        "memory: {before} KiB resident before the burst, peak {peak} KiB: {:.1} MiB more for \
         {calls} calls (queue capacity {capacity} calls)",
        (peak.saturating_sub(before)) as f64 / 1024.0
    );
}
