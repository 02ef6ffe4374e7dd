//! Per-call overhead of `#[track_usage]` against a bare call, the clock floor,
//! `#[tracing::instrument]` with a `fmt` subscriber and `#[autometrics]` with its Prometheus
//! exporter, in one run, on one thread and on two.
//!
//! ```sh
//! cargo bench --manifest-path peers/Cargo.toml --bench overhead
//! ```
//!
//! The tracked fns run with a real installed tracker whose worker drains the queue into a sink
//! that discards, so the figure includes the queue push and the worker's competition for the
//! cache lines, but no database. Calls are timed in chunks of at most [`CHUNK`], with the queue
//! drained (untimed) between chunks, so every call takes the accepting path and none is dropped
//! at a full queue; the bench checks that at the end. The `instrument` peer runs under a global
//! `fmt` subscriber that writes to `std::io::sink()`, the way a service would install it; the
//! `autometrics` peer with its global Prometheus exporter initialised.
//!
//! The `two_threads` group runs each fn on two threads at once and reports wall time divided by
//! the calls made on both, so a figure half the single-thread one means perfect scaling.

#[path = "../../usage-runtime/benches/common/mod.rs"]
mod common;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::Discard;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use usage_runtime::{track_usage, Tracker, UsageReport};

/// Calls timed between two drains of the queue: a quarter of its default capacity, so the
/// queue never fills even with two threads calling.
const CHUNK: u64 = usage_runtime::tracker::DEFAULT_QUEUE_CAPACITY as u64 / 4;

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

/// An LLM reply as a chat handler returns it: token counts and the model that served it.
#[derive(UsageReport)]
struct Reply {
    #[usage(input_tokens)]
    input: u32,
    #[usage(output_tokens)]
    output: u32,
    #[usage(model)]
    model: &'static str,
}

#[track_usage(operation = "bench.llm")]
#[inline(never)]
fn tracked_llm(input: u32) -> Reply {
    Reply {
        input,
        output: 12,
        model: "gpt-4o-mini",
    }
}

/// A reply with every kind Anthropic reports: cache reads and both cache writes, in input.
#[derive(UsageReport)]
struct CachedReply {
    #[usage(input_tokens)]
    input: u32,
    #[usage(output_tokens)]
    output: u32,
    #[usage(input_tokens, cache_read_input_tokens)]
    read: u32,
    #[usage(input_tokens, cache_creation_input_tokens)]
    written: u32,
    #[usage(cache_creation_1h_input_tokens)]
    written_1h: u32,
    #[usage(model)]
    model: &'static str,
}

#[track_usage(operation = "bench.llm_cached")]
#[inline(never)]
fn tracked_llm_cached(input: u32) -> CachedReply {
    CachedReply {
        input,
        output: 12,
        read: 2_000,
        written: 300,
        written_1h: 100,
        model: "claude-sonnet-4-5",
    }
}

#[inline(never)]
#[tracing::instrument]
fn instrumented(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

#[inline(never)]
#[autometrics::autometrics]
fn autometricised(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
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

/// Times `iters` calls of `call` on each of `threads` threads started together, in chunks with
/// the queue drained between them; returns the wall time per call made across all threads.
fn timed(tracker: &Tracker, threads: u32, iters: u64, call: impl Fn() + Sync) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let chunk = left.min(CHUNK);
        left -= chunk;
        total += if threads == 1 {
            let start = Instant::now();
            for _ in 0..chunk {
                call();
            }
            start.elapsed()
        } else {
            on_threads(threads, chunk, &call)
        };
        tracker
            .flush_blocking()
            .expect("the discarding sink never fails");
    }
    total / threads
}

/// Runs `iters` calls on each of `threads` threads released together; returns the time from the
/// first thread's start to the last one's end, each read by the calling thread itself.
fn on_threads(threads: u32, iters: u64, call: &(impl Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(threads as usize);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        call();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a bench thread panicked"))
            .collect()
    });
    let first = spans.iter().map(|span| span.0).min().expect("threads");
    let last = spans.iter().map(|span| span.1).max().expect("threads");
    last - first
}

/// Benches `call` as `name` in `group`, timed by [`timed`] on `threads` threads.
fn bench_timed(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    tracker: &Tracker,
    threads: u32,
    call: impl Fn() + Sync,
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| timed(tracker, threads, iters, &call))
    });
}

fn overhead(c: &mut Criterion) {
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .finish(),
    )
    .expect("the bench installs the only subscriber");
    autometrics::prometheus_exporter::init();
    let tracker = Tracker::builder()
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
    bench_timed(&mut group, "track_usage_sync", &tracker, 1, || {
        black_box(tracked(black_box(1), black_box(2)));
    });
    bench_timed(&mut group, "track_usage_result", &tracker, 1, || {
        let _ = black_box(tracked_result(black_box(1), black_box(2)));
    });
    bench_timed(&mut group, "track_usage_async", &tracker, 1, || {
        black_box(poll_once(tracked_async(black_box(1), black_box(2))));
    });
    bench_timed(&mut group, "track_usage_with_tenant", &tracker, 1, || {
        black_box(tracked_with_tenant(black_box("acme"), black_box(2)));
    });
    bench_timed(&mut group, "track_usage_llm_reply", &tracker, 1, || {
        black_box(tracked_llm(black_box(40)));
    });
    bench_timed(&mut group, "track_usage_llm_reply_cached", &tracker, 1, || {
        black_box(tracked_llm_cached(black_box(40)));
    });
    group.bench_function("tracing_instrument_fmt", |b| {
        b.iter(|| instrumented(black_box(1), black_box(2)))
    });
    group.bench_function("autometrics_prometheus", |b| {
        b.iter(|| autometricised(black_box(1), black_box(2)))
    });
    group.finish();

    let mut group = c.benchmark_group("two_threads");
    bench_timed(&mut group, "bare_fn", &tracker, 2, || {
        black_box(bare(black_box(1), black_box(2)));
    });
    bench_timed(&mut group, "track_usage_sync", &tracker, 2, || {
        black_box(tracked(black_box(1), black_box(2)));
    });
    bench_timed(&mut group, "tracing_instrument_fmt", &tracker, 2, || {
        black_box(instrumented(black_box(1), black_box(2)));
    });
    bench_timed(&mut group, "autometrics_prometheus", &tracker, 2, || {
        black_box(autometricised(black_box(1), black_box(2)));
    });
    group.finish();

    let health = tracker.health();
    assert_eq!(
        health.dropped, 0,
        "a timed call was dropped, so the figures include the full-queue path: {health:?}"
    );
}

criterion_group!(benches, overhead);
criterion_main!(benches);
