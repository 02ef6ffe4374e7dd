//! JSON lines, for log pipelines: one record per line, appended to a file or written to stdout.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::Sink;
use crate::error::{DbStep, Error};
use crate::record::UsageRecord;

/// Writes each record as one line of JSON (the `UsageRecord` serde form: `duration_us`,
/// RFC 3339 `started_at`, lower-case `outcome`), a batch at a time, flushed after each batch.
///
/// A file is opened in append mode and synced after each batch. A write that fails part way (a
/// full disk) is cut back to where the batch began, so a retry never glues a fragment onto the
/// next line, and a file found ending in a fragment (a crash mid-write) is cut back to its last
/// whole line when opened. The file I/O runs off the worker's thread, so the write timeout and the
/// shutdown deadline hold even while the disk does not answer. Unlike the SQL sinks, a file
/// cannot refuse a duplicate: a batch written again after a failure appears again, and readers
/// de-duplicate on `id`.
pub struct JsonLinesSink {
    out: Output,
}

enum Output {
    /// Shared with the blocking task that writes: a write the worker stopped waiting for keeps
    /// the file until it ends, and the next one waits for it.
    File {
        path: PathBuf,
        file: Arc<Mutex<std::fs::File>>,
    },
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
            .inspect(|file| {
                if let Err(error) = cut_to_last_line(&path, file) {
                    tracing::warn!(%error, file = %path.display(), "usage JSON lines: cannot check the file's last line");
                }
            })
            .map_err(|error| {
                Error::database(DbStep::Connect, &path.display().to_string(), error)
            })?;
        Ok(JsonLinesSink {
            out: Output::File {
                path,
                file: Arc::new(Mutex::new(file)),
            },
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
                let file = Arc::clone(file);
                let result = tokio::task::spawn_blocking(move || {
                    // A write the worker gave up on (its timeout) may still hold the file: this
                    // one fails at once (and is retried) instead of queueing behind it.
                    let mut file = match file.try_lock() {
                        Ok(file) => file,
                        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                        Err(std::sync::TryLockError::WouldBlock) => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::WouldBlock,
                                "an earlier write to the file is still running",
                            ))
                        }
                    };
                    append_whole(&mut file, &lines)
                })
                .await
                .unwrap_or_else(|panic| Err(std::io::Error::other(panic.to_string())));
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

/// Appends `lines` and syncs them; on a failure, cuts the file back to where they began.
fn append_whole(file: &mut std::fs::File, lines: &[u8]) -> std::io::Result<()> {
    let start = file.metadata()?.len();
    let written = file.write_all(lines).and_then(|()| file.sync_data());
    if written.is_err() {
        // What did reach the file is a fragment: it must not stay for the retry to follow.
        if let Err(cut) = file.set_len(start) {
            tracing::error!(%cut, "usage JSON lines: a partial write could not be cut back");
        }
    }
    written
}

/// Cuts a file that ends in a fragment of a record (a crash mid-write) back to its last whole
/// line. Read through a handle of its own (the sink's may not read); a file whose tail is not a
/// record's start is left as it is.
fn cut_to_last_line(path: &Path, append: &std::fs::File) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(());
    }
    // Read back from the end, a block at a time, to the last newline.
    let mut end = length;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let block = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(block)?;
        if let Some(at) = block.iter().rposition(|&byte| byte == b'\n') {
            let whole = start + at as u64 + 1;
            if whole < length && starts_a_record(&mut file, whole)? {
                tracing::warn!(
                    bytes = length - whole,
                    "usage JSON lines: the file ended in a partial line; cut back"
                );
                append.set_len(whole)?;
            }
            return Ok(());
        }
        end = start;
    }
    // No newline at all: one fragment, if it is one of ours.
    if starts_a_record(&mut file, 0)? {
        append.set_len(0)?;
    }
    Ok(())
}

/// Whether the bytes at `at` begin a JSON object, as each of this sink's lines does.
fn starts_a_record(file: &mut std::fs::File, at: u64) -> std::io::Result<bool> {
    let mut first = [0u8; 1];
    file.seek(SeekFrom::Start(at))?;
    Ok(file.read(&mut first)? == 1 && first[0] == b'{')
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn a_file_ending_in_a_fragment_is_cut_back_to_its_last_line() {
        let dir = tempfile::tempdir().unwrap();
        for (before, after) in [
            ("", ""),
            ("{\"a\":1}\n", "{\"a\":1}\n"),
            ("{\"a\":1}\n{\"b\":", "{\"a\":1}\n"),
            ("{\"b\":", ""),
            // Not one of ours: left alone.
            ("notes without a newline", "notes without a newline"),
            ("{\"a\":1}\nplain text", "{\"a\":1}\nplain text"),
        ] {
            let path = dir.path().join("usage.jsonl");
            std::fs::File::create(&path)
                .unwrap()
                .write_all(before.as_bytes())
                .unwrap();
            drop(super::JsonLinesSink::create(&path).unwrap());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "{before:?}");
        }
    }
}
