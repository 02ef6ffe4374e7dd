//! `usage ingest`: records from a NATS JetStream stream into a database through a durable pull
//! consumer, each batch acknowledged only after its commit.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures_util::StreamExt;
use usage_runtime::{Error, UsageRecord};

/// What `usage ingest` was asked for.
#[derive(Debug, clap::Args)]
pub(crate) struct IngestArgs {
    /// The NATS server.
    #[arg(long, env = "USAGE_NATS_URL", hide_env_values = true)]
    nats: String,
    /// The stream the tracker's `NatsSink` publishes to.
    #[arg(long, default_value = "USAGE")]
    stream: String,
    /// The durable consumer; workers started with the same name share the work.
    #[arg(long, default_value = "usage-ingest")]
    consumer: String,
    /// Records per batch: one transaction each, or one per part when the SQL sink splits it over
    /// its write connections (2,048 records or more).
    #[arg(long, default_value_t = 4096)]
    batch: usize,
    /// Connections a PostgreSQL or MySQL database is written over at once (one part of a batch
    /// each); each worker holds up to this many.
    #[arg(long, default_value_t = usage_runtime::sink::DEFAULT_WRITE_CONNECTIONS)]
    pub(crate) write_connections: usize,
    /// How long to wait for a batch to fill before writing what came.
    #[arg(long, default_value = "500ms", value_parser = parse_millis)]
    max_wait: Duration,
    /// How long a fetched message may stay unacknowledged before the stream hands it to
    /// another worker (a worker that died mid-batch).
    #[arg(long, default_value = "30s", value_parser = parse_ack_wait)]
    ack_wait: Duration,
    /// How long one write attempt may take before it is given up and tried again on a new
    /// connection (a database that stopped answering).
    #[arg(long, default_value = "60s", value_parser = parse_write_timeout)]
    write_timeout: Duration,
    /// Messages that are not records go here (JSON lines), and are acknowledged; default: the
    /// error log.
    #[arg(long)]
    quarantine: Option<PathBuf>,
}

/// An ack wait: a second at least, so that progress signals (a third of it) arrive in time.
fn parse_ack_wait(text: &str) -> Result<Duration, String> {
    let wait = parse_millis(text)?;
    if wait < Duration::from_secs(1) {
        return Err(format!("`{text}`: the ack wait must be at least 1s"));
    }
    Ok(wait)
}

/// A write timeout: above zero (no attempt could ever finish).
fn parse_write_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_millis(text)?;
    if timeout.is_zero() {
        return Err(format!("`{text}`: the write timeout must be above zero"));
    }
    Ok(timeout)
}

fn parse_millis(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "ms"), |at| text.split_at(at));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected like 500ms or 2s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        _ => Err(format!("`{text}`: expected like 500ms or 2s")),
    }
}

/// Writes a batch, whatever the database.
pub(crate) trait Write {
    async fn write_batch(&mut self, records: &[UsageRecord]) -> Result<(), Error>;
}

fn nats_error(step: &str, target: &str, error: impl std::fmt::Display) -> Error {
    Error::InvalidConfig(format!("NATS {step} at {target}: {error}"))
}

/// Runs until SIGINT or SIGTERM, then finishes the batch in hand and returns.
pub(crate) async fn run(args: IngestArgs, mut sink: impl Write) -> Result<(), Error> {
    let target = usage_runtime::sink::nats_shown(&args.nats);
    let client = usage_runtime::sink::nats_connect_options(&args.nats)
        .connect(usage_runtime::sink::nats_without_credentials(&args.nats))
        .await
        .map_err(|error| Error::NotWritten {
            count: 0,
            reason: format!("cannot connect to NATS at {target}: {error}"),
        })?;
    let context = jetstream::new(client.clone());
    let stream = context
        .get_stream(&args.stream)
        .await
        .map_err(|error| nats_error(&format!("stream `{}`", args.stream), &target, error))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &args.consumer,
            pull::Config {
                durable_name: Some(args.consumer.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: args.ack_wait,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|error| nats_error(&format!("consumer `{}`", args.consumer), &target, error))?;
    // An existing consumer keeps its own settings: without explicit acks, messages would count
    // as delivered before their commit, and a crash between the two would lose them.
    let policy = consumer.cached_info().config.ack_policy;
    if policy != jetstream::consumer::AckPolicy::Explicit {
        return Err(nats_error(
            &format!("consumer `{}`", args.consumer),
            &target,
            format!(
                "exists with ack policy {policy:?}; `usage ingest` acknowledges each message \
                 after its commit and needs an explicit-ack consumer (delete this one or name \
                 another)"
            ),
        ));
    }
    // An existing consumer keeps its own ack wait: the progress signals below follow that one.
    let ack_wait = consumer.cached_info().config.ack_wait;
    if ack_wait != args.ack_wait {
        eprintln!(
            "consumer `{}` exists with an ack wait of {ack_wait:?} (not the {:?} asked for); \
             using it",
            args.consumer, args.ack_wait
        );
    }
    let stop = stop_on_signal();
    let started = Instant::now();
    let mut report = Instant::now();
    let (mut written, mut since_report, mut quarantined) = (0u64, 0u64, 0u64);
    eprintln!(
        "ingesting stream `{}` as consumer `{}` from {target}",
        args.stream, args.consumer
    );
    while !stop.load(Ordering::SeqCst) {
        // Waits up to `max_wait` for the batch to fill, then takes what came.
        let mut batch = match consumer
            .batch()
            .max_messages(args.batch)
            .expires(args.max_wait)
            .messages()
            .await
        {
            Ok(batch) => batch,
            Err(error) => {
                eprintln!("fetch failed, trying again: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut messages = Vec::with_capacity(args.batch);
        while let Some(message) = batch.next().await {
            match message {
                Ok(message) => messages.push(message),
                Err(error) => eprintln!("a message could not be fetched: {error}"),
            }
        }
        if messages.is_empty() {
            continue;
        }
        let mut records = Vec::with_capacity(messages.len());
        // Whether each message carries a record (the others are set aside now).
        let mut carries = Vec::with_capacity(messages.len());
        for message in &messages {
            match serde_json::from_slice::<UsageRecord>(&message.payload) {
                Ok(record) => {
                    records.push(record);
                    carries.push(true);
                }
                Err(error) => {
                    quarantine(args.quarantine.as_ref(), &message_line(message, &error));
                    quarantined += 1;
                    carries.push(false);
                }
            }
        }
        // The write is idempotent on the record id, so retrying it, or another worker writing a
        // redelivered message again, never duplicates a row. Records the database rejects are
        // set aside one by one; on a stop during retries the batch is handed back to the stream,
        // for another worker.
        // However long the write takes (a locked table, retries through an outage), the
        // messages stay this worker's: it tells the stream it is still working on them.
        let writing = write(
            &mut sink,
            &records,
            &stop,
            args.quarantine.as_ref(),
            args.write_timeout,
        );
        match in_progress(writing, ack_wait, || progress(&messages)).await {
            Written::All { rejected } => quarantined += rejected,
            Written::Stopped => {
                hand_back(&messages, &carries).await;
                break;
            }
        }
        for message in &messages {
            if let Err(error) = message.ack_with(AckKind::Ack).await {
                // Redelivered after the ack wait and written again: harmless.
                eprintln!("an acknowledgement failed: {error}");
            }
        }
        written += records.len() as u64;
        since_report += records.len() as u64;
        if report.elapsed() >= Duration::from_secs(1) {
            let pending = consumer
                .clone()
                .info()
                .await
                .map(|info| info.num_pending)
                .unwrap_or(0);
            eprintln!(
                "{:.0} records/s, {written} written, {quarantined} quarantined, {pending} pending",
                since_report as f64 / report.elapsed().as_secs_f64()
            );
            report = Instant::now();
            since_report = 0;
        }
    }
    // The last acknowledgements go out before the connection closes.
    if let Err(error) = client.flush().await {
        eprintln!("the last acknowledgements may not have reached NATS: {error}");
    }
    println!(
        "stopped after {written} records in {:.1} s ({quarantined} quarantined)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Set when SIGINT or SIGTERM arrives.
fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("stopping after the batch in hand");
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

/// Runs `work`, calling `signal` every third of `ack_wait` (to tell the stream that the batch is
/// still being worked on, so it does not hand it to another worker meanwhile). The signals run
/// beside the work, not in its place: one that waits (a client buffer full while NATS is
/// disconnected) does not hold up the write.
async fn in_progress<T, S: std::future::Future<Output = ()>>(
    work: impl std::future::Future<Output = T>,
    ack_wait: Duration,
    mut signal: impl FnMut() -> S,
) -> T {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let signals = async {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            signal().await;
        }
    };
    tokio::select! {
        done = work => done,
        () = signals => unreachable!("the signals never end"),
    }
}

/// Tells the stream that `messages` are still being worked on.
async fn progress(messages: &[jetstream::Message]) {
    for message in messages {
        if let Err(error) = message.ack_with(AckKind::Progress).await {
            eprintln!("a progress signal failed: {error}");
        }
    }
}

/// On a stop before the batch was written: the messages carrying records go back to the stream
/// at once (`Nak`), for another worker to take now rather than after the ack wait; those already
/// set aside are acknowledged, so they are not set aside twice.
async fn hand_back(messages: &[jetstream::Message], carries: &[bool]) {
    for (message, &carries) in messages.iter().zip(carries) {
        let kind = if carries {
            AckKind::Nak(None)
        } else {
            AckKind::Ack
        };
        if let Err(error) = message.ack_with(kind).await {
            eprintln!("a message could not be handed back (the stream redelivers it after the ack wait): {error}");
        }
    }
}

enum Written {
    All { rejected: u64 },
    Stopped,
}

/// Writes `records`, retrying failures with backoff until a stop; a batch the database rejects
/// is split until each rejected record is alone, and that one is quarantined.
async fn write(
    sink: &mut impl Write,
    records: &[UsageRecord],
    stop: &AtomicBool,
    file: Option<&PathBuf>,
    timeout: Duration,
) -> Written {
    let mut pending: Vec<&[UsageRecord]> = vec![records];
    let mut rejected = 0;
    let mut delay = Duration::from_millis(100);
    while let Some(part) = pending.pop() {
        if part.is_empty() {
            continue;
        }
        loop {
            // An attempt that hangs (a connection that stopped answering) is given up and tried
            // again, on a new connection: the messages are kept meanwhile by progress signals,
            // so they must not be held forever.
            let attempt = tokio::time::timeout(timeout, sink.write_batch(part))
                .await
                .unwrap_or(Err(Error::Timeout(timeout)));
            match attempt {
                Ok(()) => break,
                // Started before the pruned horizon: set aside at once, the rest was written.
                Err(Error::Expired { refused, horizon }) => {
                    let refused: std::collections::HashSet<_> = refused.0.into_iter().collect();
                    for record in part.iter().filter(|record| refused.contains(&record.id)) {
                        let reason = Error::Expired {
                            refused: usage_runtime::error::RecordIds(vec![record.id]),
                            horizon,
                        };
                        let line = serde_json::json!({
                            "record": record,
                            "reason": reason.to_string(),
                        });
                        quarantine(file, &line);
                        rejected += 1;
                    }
                    break;
                }
                Err(error)
                    if error.failure_kind() == usage_runtime::error::FailureKind::Rejected =>
                {
                    if let [record] = part {
                        let line = serde_json::json!({
                            "record": record,
                            "reason": error.to_string(),
                        });
                        quarantine(file, &line);
                        rejected += 1;
                    } else {
                        let (first, second) = part.split_at(part.len() / 2);
                        pending.push(second);
                        pending.push(first);
                    }
                    break;
                }
                Err(error) => {
                    if stop.load(Ordering::SeqCst) {
                        return Written::Stopped;
                    }
                    eprintln!("write failed, retrying in {delay:?}: {error}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    Written::All { rejected }
}

fn message_line(message: &jetstream::Message, error: &serde_json::Error) -> serde_json::Value {
    serde_json::json!({
        "subject": message.subject.as_str(),
        "reason": error.to_string(),
        "payload": String::from_utf8_lossy(&message.payload),
    })
}

/// Sets something that cannot be written aside, with the reason: in the quarantine file, or the
/// error log when there is none or it cannot be written (never lost in silence, never retried).
fn quarantine(file: Option<&PathBuf>, line: &serde_json::Value) {
    if let Some(path) = file {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut out| writeln!(out, "{line}"));
        match appended {
            Ok(()) => return,
            Err(error) => eprintln!(
                "cannot write the quarantine file {}: {error}",
                path.display()
            ),
        }
    }
    eprintln!("quarantined: {line}");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::in_progress;

    // On tokio's paused clock, which moves on whenever every task waits: no real waiting.
    #[tokio::test(start_paused = true)]
    async fn a_signal_that_waits_does_not_hold_up_the_work() {
        let work = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            7
        };
        // Every signal waits forever, from the first, due after 100 ms.
        let done = tokio::time::timeout(
            Duration::from_secs(10),
            in_progress(work, Duration::from_millis(300), std::future::pending),
        )
        .await;
        assert_eq!(done, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn signals_go_out_while_the_work_runs() {
        let sent = std::cell::Cell::new(0);
        let work = tokio::time::sleep(Duration::from_millis(1_000));
        in_progress(work, Duration::from_millis(300), || {
            sent.set(sent.get() + 1);
            std::future::ready(())
        })
        .await;
        // Every 100 ms for a second: nine, or ten if the last is due with the end of the work.
        assert!((9..=10).contains(&sent.get()), "{} signals", sent.get());
    }
}
