//! The builder's defaults, checks and backoff.

use super::*;

#[test]
fn backoff_is_exponential_capped_and_jittered() {
    let retry = Retry {
        max_retries: 5,
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    for attempt in 1..=10 {
        let ceiling =
            (Duration::from_millis(100) * (1 << (attempt - 1))).min(Duration::from_secs(1));
        let delays: Vec<Duration> = (0..200).map(|_| retry.delay(attempt)).collect();
        assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
        // Full jitter spreads the waits over the whole range.
        assert!(delays.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
        assert!(
            delays.iter().any(|d| *d > ceiling * 3 / 4),
            "attempt {attempt}"
        );
    }
}

#[test]
fn defaults_are_pinned() {
    let builder = Tracker::builder();
    assert_eq!(builder.batch(), 4096);
    // A smaller queue keeps half its room free of the default batch.
    assert_eq!(Tracker::builder().queue_capacity(1000).batch(), 500);
    assert_eq!(Tracker::builder().queue_capacity(8192).batch(), 4096);
    assert_eq!(Tracker::builder().queue_capacity(1).batch(), 1);
    assert_eq!(
        Tracker::builder().queue_capacity(10).batch_size(7).batch(),
        7
    );
    assert_eq!(builder.flush_interval, Duration::from_secs(1));
    assert_eq!(builder.queue_capacity, 65_536);
    assert_eq!(builder.shutdown_timeout, Duration::from_secs(5));
    assert_eq!(builder.error_message_limit, 1024);
    assert_eq!(builder.attributes_limit, 16 * 1024);
    assert_eq!(builder.id_namespace, DEFAULT_ID_NAMESPACE);
    assert_eq!(builder.retry.max_retries, 5);
    assert_eq!(builder.retry.base, Duration::from_millis(100));
    assert_eq!(builder.retry.max, Duration::from_secs(10));
    assert_eq!(
        builder.overflow, None,
        "Spill with a spool, DropNewest without"
    );
    assert_eq!(builder.durability, Durability::Memory);
    assert!(builder.check().is_ok());
}

#[test]
fn a_time_setting_too_long_for_the_clock_is_refused_at_install() {
    let sink = crate::sink::MemorySink::new;
    let long = Duration::MAX;
    let builders = [
        ("flush_interval", Tracker::builder().flush_interval(long)),
        (
            "shutdown_timeout",
            Tracker::builder().shutdown_timeout(long),
        ),
        ("write_timeout", Tracker::builder().write_timeout(long)),
        (
            "retry_backoff",
            Tracker::builder().retry_backoff(long, long),
        ),
        (
            "retry_backoff",
            Tracker::builder().retry_backoff(Duration::ZERO, long),
        ),
        (
            "Overflow::Block",
            Tracker::builder().overflow(Overflow::Block(long)),
        ),
        (
            "Fsync::Interval",
            Tracker::builder()
                .spool_dir(std::env::temp_dir().join("usage-never-opened"))
                .spool_fsync(crate::spool::Fsync::Interval(long)),
        ),
    ];
    for (name, builder) in builders {
        let error = builder.sink(sink()).install().unwrap_err();
        assert!(
            matches!(error, Error::InvalidConfig(ref message) if message.contains(name)),
            "{name}: {error}"
        );
    }
    // A year is accepted (and installs: the worker adds it to the clock without overflow).
    let tracker = Tracker::builder()
        .sink(sink())
        .flush_interval(LONGEST_SETTING)
        .install()
        .unwrap();
    drop(tracker);
}

#[test]
fn invalid_settings_are_named() {
    let sink = crate::sink::MemorySink::new();
    type Setting = fn(TrackerBuilder) -> TrackerBuilder;
    let cases: [(Setting, &str); 3] = [
        (|b| b.batch_size(0), "batch_size"),
        (|b| b.batch_size(100).queue_capacity(10), "queue_capacity"),
        (|b| b.flush_interval(Duration::ZERO), "flush_interval"),
    ];
    for (setting, named) in cases {
        let err = setting(Tracker::builder().sink(sink.clone()))
            .install()
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig(ref m) if m.contains(named)),
            "{named}: {err}"
        );
    }
    assert!(matches!(
        Tracker::builder().install().unwrap_err(),
        Error::NoSink
    ));
}
