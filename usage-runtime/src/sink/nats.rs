//! `NatsSink`: records published to a NATS JetStream stream, one message per record, for
//! `usage ingest` workers to write to the database.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream};

use crate::error::{BoxError, DbStep, Error, Failure, FailureKind};
use crate::record::UsageRecord;

/// Where and how records are published.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsConfig {
    /// The stream's name; default `USAGE`.
    pub stream: String,
    /// Records go to `<subject_prefix>.<service>`; default `usage.records`.
    pub subject_prefix: String,
    /// How long the stream remembers a record id to drop its redeliveries; default 2 minutes
    /// (JetStream's own default). Retries of one batch must fall inside it.
    pub duplicate_window: Duration,
    /// How long the stream keeps messages workers have not taken; default 7 days. Past it,
    /// JetStream deletes them unread (and nothing counts them); zero keeps them until taken.
    pub max_age: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            stream: "USAGE".to_owned(),
            subject_prefix: "usage.records".to_owned(),
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 86_400),
        }
    }
}

impl NatsConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another stream name.
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self
    }

    /// Another subject prefix.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// Another duplicate window.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// The subjects the stream must take: every service under the prefix.
    fn subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }
}

/// Publishes each record to `<subject_prefix>.<service>` on a JetStream stream, with the
/// `Nats-Msg-Id` header set to the record's id so that the stream drops a redelivered record
/// within its duplicate window. A batch's publishes are pipelined and their acknowledgements
/// awaited together; a failure is transient (the batch is retried, then spooled).
///
/// [`connect`](Self::connect) checks the server and the stream (creating it when missing, with
/// file storage) and says what is wrong with an existing one; the publishing connection is
/// opened by the tracker's worker, on its own runtime.
pub struct NatsSink {
    url: String,
    target: String,
    config: NatsConfig,
    context: Option<jetstream::Context>,
}

impl fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("server", &self.target)
            .field("stream", &self.config.stream)
            .field("subject_prefix", &self.config.subject_prefix)
            .finish_non_exhaustive()
    }
}

/// A NATS failure with the kind the tracker acts on.
struct NatsFailure {
    kind: FailureKind,
    source: BoxError,
}

impl Failure for NatsFailure {
    fn kind(&self) -> FailureKind {
        self.kind
    }
    fn boxed(self) -> BoxError {
        self.source
    }
}

fn failure(kind: FailureKind, source: impl Into<BoxError>) -> NatsFailure {
    NatsFailure {
        kind,
        source: source.into(),
    }
}

impl NatsSink {
    /// Connects to `url` (`nats://host:port`), creates the default stream `USAGE` on
    /// `usage.records.>` if it is missing, or checks it.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        Self::connect_with(url, NatsConfig::default()).await
    }

    /// [`connect`](Self::connect) with another stream, subject prefix or duplicate window.
    pub async fn connect_with(url: &str, config: NatsConfig) -> Result<Self, Error> {
        let target = shown(url);
        if !is_subject(&config.subject_prefix) {
            return Err(Error::InvalidConfig(format!(
                "NATS subject prefix `{}`: expected dot-separated tokens without spaces or \
                 wildcards",
                config.subject_prefix
            )));
        }
        let mut sink = NatsSink {
            url: url.to_owned(),
            target,
            config,
            context: None,
        };
        // Checked now, on the caller's runtime, with a connection of its own; the worker opens
        // the publishing one on its runtime.
        sink.open().await?;
        sink.context = None;
        Ok(sink)
    }

    async fn open(&mut self) -> Result<&jetstream::Context, Error> {
        if self.context.is_none() {
            let client = connect_options(&self.url)
                .connect(without_credentials(&self.url))
                .await
                .map_err(|error| {
                    Error::database(
                        DbStep::Connect,
                        &self.target,
                        failure(FailureKind::Transient, error),
                    )
                })?;
            let context = jetstream::new(client);
            ensure_stream(&context, &self.config)
                .await
                .map_err(|failure| Error::database(DbStep::Migrate, &self.target, failure))?;
            self.context = Some(context);
        }
        Ok(self.context.as_ref().expect("opened above"))
    }

    fn subject(&self, service: &str) -> String {
        let token: String = service
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let token = if token.is_empty() { "_" } else { &token };
        format!("{}.{token}", self.config.subject_prefix)
    }
}

/// `url` as it may be shown: with a scheme (the client accepts `host:port`), never a secret.
#[doc(hidden)]
pub fn shown(url: &str) -> String {
    if url.contains("://") {
        crate::error::redact_url(url)
    } else {
        crate::error::redact_url(&format!("nats://{url}"))
    }
}

/// `url` without its user info, which goes to the client as options instead, so that no log line
/// of the client's (it logs server addresses) can carry it.
#[doc(hidden)]
pub fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{rest}")
}

/// Connection options carrying the URL's user and password, or token, if any.
#[doc(hidden)]
pub fn connect_options(url: &str) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let Some((userinfo, _)) = rest.rsplit_once('@') else {
        return options;
    };
    match userinfo.split_once(':') {
        Some((user, password)) => options.user_and_password(user.to_owned(), password.to_owned()),
        None => options.token(userinfo.to_owned()),
    }
}

/// Whether `text` is a literal NATS subject: dot-separated non-empty tokens, no wildcards.
fn is_subject(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| !c.is_whitespace() && c != '*' && c != '>')
        })
}

/// Creates the stream, or checks that the existing one takes our subjects, stores on file and
/// drops duplicates for at least our window.
async fn ensure_stream(
    context: &jetstream::Context,
    config: &NatsConfig,
) -> Result<(), NatsFailure> {
    let subjects = config.subjects();
    match context.get_stream(&config.stream).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|error| failure(FailureKind::Transient, error))?;
            let found = &info.config;
            let mut problems = Vec::new();
            if !found
                .subjects
                .iter()
                .any(|subject| covers(subject, &subjects))
            {
                problems.push(format!(
                    "its subjects {:?} do not take `{subjects}`",
                    found.subjects
                ));
            }
            if found.retention == stream::RetentionPolicy::Interest {
                problems.push(
                    "its interest retention drops messages no consumer is there for yet".to_owned(),
                );
            }
            if found.no_ack {
                problems.push("it does not acknowledge publishes (no_ack)".to_owned());
            }
            if found.storage != stream::StorageType::File {
                problems.push("it keeps messages in memory, not on file".to_owned());
            }
            if found.duplicate_window < config.duplicate_window {
                problems.push(format!(
                    "its duplicate window is {:?}, shorter than the {:?} asked for",
                    found.duplicate_window, config.duplicate_window
                ));
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(failure(
                    FailureKind::Other,
                    format!(
                        "the existing stream `{}` does not fit: {}",
                        config.stream,
                        problems.join("; ")
                    ),
                ))
            }
        }
        Err(error)
            if matches!(
                error.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            context
                .create_stream(stream::Config {
                    name: config.stream.clone(),
                    subjects: vec![subjects],
                    storage: stream::StorageType::File,
                    retention: stream::RetentionPolicy::Limits,
                    duplicate_window: config.duplicate_window,
                    max_age: config.max_age,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|error| {
                    // A configuration the server refuses is for a person to fix; anything else
                    // (a timeout, JetStream not ready yet) may pass.
                    let kind = match error.kind() {
                        jetstream::context::CreateStreamErrorKind::JetStream(_)
                        | jetstream::context::CreateStreamErrorKind::InvalidStreamName
                        | jetstream::context::CreateStreamErrorKind::EmptyStreamName => {
                            FailureKind::Other
                        }
                        _ => FailureKind::Transient,
                    };
                    failure(kind, error)
                })
        }
        Err(error) => Err(failure(FailureKind::Transient, error)),
    }
}

/// Whether the stream subject `filter` takes every subject under `wanted` (`prefix.>`).
fn covers(filter: &str, wanted: &str) -> bool {
    if filter == wanted || filter == ">" {
        return true;
    }
    let filter: Vec<&str> = filter.split('.').collect();
    let wanted: Vec<&str> = wanted.split('.').collect();
    for (i, token) in filter.iter().enumerate() {
        match (*token, wanted.get(i)) {
            (">", Some(_)) => return true,
            ("*", Some(other)) if *other != ">" => continue,
            (token, Some(other)) if token == *other => continue,
            _ => return false,
        }
    }
    false
}

/// Publishes whose acks a write awaits before publishing more (the client allows 5,000).
const MAX_IN_FLIGHT: usize = 1024;

impl super::Sink for NatsSink {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        let subjects: Vec<String> = batch.iter().map(|r| self.subject(&r.service)).collect();
        let target = self.target.clone();
        let context = self.open().await?.clone();
        let fail =
            |kind, error: BoxError| Error::database(DbStep::Write, &target, failure(kind, error));
        // The server answers "no stream" in the acknowledgement ("no responders"): the stream
        // is checked (and made again) before the retry.
        let mut lost_stream = false;
        let mut acked = |ack: Result<_, jetstream::context::PublishError>| {
            ack.map(drop).map_err(|error| {
                lost_stream |= error.kind() == PublishErrorKind::StreamNotFound;
                fail(FailureKind::Transient, error.into())
            })
        };
        let mut acks: Vec<jetstream::context::PublishAckFuture> =
            Vec::with_capacity(batch.len().min(MAX_IN_FLIGHT));
        for (record, subject) in batch.iter().zip(subjects) {
            if acks.len() >= MAX_IN_FLIGHT {
                // The client allows a bounded number of acks in flight: collect these first.
                for ack in acks.drain(..) {
                    if let Err(error) = acked(ack.await) {
                        if lost_stream {
                            self.context = None;
                        }
                        return Err(error);
                    }
                }
            }
            let payload = serde_json::to_vec(record)
                .map_err(|error| fail(FailureKind::Rejected, error.into()))?;
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id(record.id.hyphenated().to_string());
            let ack = match context.send_publish(subject, publish).await {
                Ok(ack) => ack,
                Err(error) => {
                    let kind = match error.kind() {
                        PublishErrorKind::MaxPayloadExceeded => FailureKind::Rejected,
                        PublishErrorKind::StreamNotFound => {
                            // Checked (and made again) before the retry.
                            self.context = None;
                            FailureKind::Transient
                        }
                        _ => FailureKind::Transient,
                    };
                    return Err(fail(kind, error.into()));
                }
            };
            acks.push(ack);
        }
        // Pipelined: every publish is out before the first acknowledgement is awaited.
        for ack in acks {
            if let Err(error) = acked(ack.await) {
                if lost_stream {
                    self.context = None;
                }
                return Err(error);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{covers, is_subject, shown, without_credentials};

    #[test]
    fn stream_subjects_cover_the_prefix() {
        assert!(covers("usage.records.>", "usage.records.>"));
        assert!(covers("usage.>", "usage.records.>"));
        assert!(covers(">", "usage.records.>"));
        assert!(covers("*.records.>", "usage.records.>"));
        assert!(!covers("usage.records.*", "usage.records.>"));
        assert!(!covers("usage.records.chat", "usage.records.>"));
        assert!(!covers("other.>", "usage.records.>"));
    }

    #[test]
    fn credentials_are_never_shown_and_leave_the_url() {
        assert_eq!(
            shown("nats://app:s3cret@nats:4222"),
            "nats://app:***@nats:4222"
        );
        assert!(!shown("app:s3cret@nats:4222").contains("s3cret"));
        assert!(!shown("t0ken@nats:4222").contains("t0ken"));
        assert_eq!(
            without_credentials("nats://app:s3cret@nats:4222"),
            "nats://nats:4222"
        );
        assert_eq!(without_credentials("t0ken@nats:4222"), "nats://nats:4222");
        assert_eq!(without_credentials("nats://nats:4222"), "nats://nats:4222");
    }

    #[test]
    fn prefixes_are_literal_subjects() {
        assert!(is_subject("usage.records"));
        assert!(!is_subject("usage..records"));
        assert!(!is_subject("usage.*"));
        assert!(!is_subject("usage records"));
        assert!(!is_subject(""));
    }
}
