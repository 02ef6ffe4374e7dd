//! JSON lines, for log pipelines: one record per line, appended to a file or written to stdout.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::Sink;
use crate::error::{DbStep, Error};
use crate::record::UsageRecord;

/// Writes each record as one line of JSON (the `UsageRecord` serde form: `duration_us`,
/// RFC 3339 `started_at`, lower-case `outcome`), a batch at a time, flushed after each batch.
///
/// A file is opened in append mode and synced after each batch. Unlike the SQL sinks, a file
/// cannot refuse a duplicate: a batch written again after a failure appears again, and readers
/// de-duplicate on `id`.
pub struct JsonLinesSink {
    out: Output,
}

enum Output {
    File { path: PathBuf, file: std::fs::File },
    Stdout,
}

impl fmt::Debug for JsonLinesSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.out {
            Output::File { path, .. } => {
                f.debug_struct("JsonLinesSink").field("path", path).finish()
            }
            Output::Stdout => f
                .debug_struct("JsonLinesSink")
                .field("path", &"<stdout>")
                .finish(),
        }
    }
}

impl JsonLinesSink {
    /// Appends to `path`, creating it if missing.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|error| {
                Error::database(DbStep::Connect, &path.display().to_string(), error)
            })?;
        Ok(JsonLinesSink {
            out: Output::File { path, file },
        })
    }

    /// Writes to the process's standard output.
    pub fn stdout() -> Self {
        JsonLinesSink {
            out: Output::Stdout,
        }
    }

    fn lines(batch: &[UsageRecord]) -> Result<Vec<u8>, serde_json::Error> {
        let mut lines = Vec::with_capacity(batch.len() * 512);
        for record in batch {
            serde_json::to_writer(&mut lines, record)?;
            lines.push(b'\n');
        }
        Ok(lines)
    }
}

impl Sink for JsonLinesSink {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        let (target, result) = match &mut self.out {
            Output::File { path, file } => {
                let target = path.display().to_string();
                let lines =
                    Self::lines(batch).map_err(|e| Error::database(DbStep::Write, &target, e))?;
                let result = file.write_all(&lines).and_then(|()| file.sync_data());
                (target, result)
            }
            Output::Stdout => {
                let target = "<stdout>".to_owned();
                let lines =
                    Self::lines(batch).map_err(|e| Error::database(DbStep::Write, &target, e))?;
                let mut stdout = std::io::stdout().lock();
                let result = stdout.write_all(&lines).and_then(|()| stdout.flush());
                (target, result)
            }
        };
        result.map_err(|error| Error::database(DbStep::Write, &target, error))
    }
}
