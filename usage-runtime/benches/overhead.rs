//! Per-call overhead of `#[track_usage]` against a bare call and the clock floor, in one run.
//!
//! ```sh
//! cargo bench -p usage-runtime --bench overhead
//! ```
//!
//! The tracked fns run with a real installed tracker whose worker drains the queue into a sink
//! that discards, so the figure includes the queue push and the worker's competition for the
//! cache lines, but no database.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use usage_runtime::sink::Sink;
use usage_runtime::{track_usage, Error, Tracker, UsageRecord};

#[derive(Debug)]
struct Discard;

impl Sink for Discard {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        black_box(batch.len());
        Ok(())
    }
}

#[inline(never)]
fn bare(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

#[inline(never)]
#[track_usage(operation = "bench.sync")]
fn tracked(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

#[track_usage(operation = "bench.result")]
#[inline(never)]
fn tracked_result(a: u64, b: u64) -> Result<u64, std::fmt::Error> {
    Ok(a.wrapping_add(b))
}

#[track_usage(operation = "bench.async")]
async fn tracked_async(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

#[track_usage(operation = "bench.tenant", tenant = tenant)]
#[inline(never)]
fn tracked_with_tenant(tenant: &str, a: u64) -> u64 {
    a.wrapping_add(tenant.len() as u64)
}

fn poll_once<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("the benchmarked future never waits"),
    }
}

fn overhead(c: &mut Criterion) {
    let _tracker = Tracker::builder()
        .sink(Discard)
        .flush_interval(Duration::from_millis(100))
        .install()
        .expect("install");
    let mut group = c.benchmark_group("per_call");
    group.bench_function("bare_fn", |b| b.iter(|| bare(black_box(1), black_box(2))));
    group.bench_function("two_std_instant_now", |b| {
        b.iter(|| {
            let start = std::time::Instant::now();
            black_box(start.elapsed())
        })
    });
    group.bench_function("two_quanta_instant_now", |b| {
        b.iter(|| {
            let start = quanta::Instant::now();
            black_box(quanta::Instant::now().saturating_duration_since(start))
        })
    });
    group.bench_function("track_usage_sync", |b| {
        b.iter(|| tracked(black_box(1), black_box(2)))
    });
    group.bench_function("track_usage_result", |b| {
        b.iter(|| tracked_result(black_box(1), black_box(2)))
    });
    group.bench_function("track_usage_async", |b| {
        b.iter(|| poll_once(tracked_async(black_box(1), black_box(2))))
    });
    group.bench_function("track_usage_with_tenant", |b| {
        b.iter(|| tracked_with_tenant(black_box("acme"), black_box(2)))
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
