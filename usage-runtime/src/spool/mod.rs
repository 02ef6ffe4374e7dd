//! The disk spool: where records go while the sink is failing, and where a crashed process's
//! records wait for the next start.
//!
//! A spool is a directory of append-only segment files, `spool-<sequence>.seg`, replayed oldest
//! first. Each record is one frame:
//!
//! ```text
//! magic "USG1" (4 bytes) | payload length (u32 LE) | CRC32C of the payload (u32 LE) | payload
//! ```
//!
//! where the payload is the record as JSON (its id already assigned, so a replay is idempotent).
//! A segment is deleted only after every record in it has been written (or quarantined). Opening
//! a spool truncates a torn tail (a frame cut short by a crash), skips a corrupt frame in the
//! middle by searching for the next magic, and sets aside a file with no readable frame as
//! `*.corrupt`, counting each case; it never refuses to start.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::record::UsageRecord;

const MAGIC: [u8; 4] = *b"USG1";
const HEADER: usize = 12;
/// A frame claiming more than this is corrupt.
const MAX_FRAME: usize = 64 * 1024 * 1024;
/// A segment takes new frames until it reaches this size.
pub(crate) const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// When appended frames are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fsync {
    /// After every append: nothing acknowledged to the spool is lost in a crash or power cut.
    Always,
    /// At most this long after an append (checked at each append and each worker wake-up): a
    /// power cut may lose that much; a process crash loses nothing the OS already has.
    Interval(Duration),
    /// Left to the OS.
    Never,
}

/// What a spool directory holds, read without changing anything (for `usage spool status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct SpoolStatus {
    /// Segment files.
    pub segments: u64,
    /// Readable records waiting to be replayed.
    pub records: u64,
    /// Bytes the segments take.
    pub bytes: u64,
    /// Segments whose tail was cut short (a crash while appending).
    pub torn_tails: u64,
    /// Frames that are unreadable.
    pub corrupt_frames: u64,
    /// Files set aside as `*.corrupt` earlier.
    pub set_aside: u64,
    /// When the oldest waiting record's call started.
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
}

/// Reads what the spool in `dir` holds, changing nothing.
pub fn status(dir: &Path) -> io::Result<SpoolStatus> {
    let mut status = SpoolStatus::default();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("seg") => {
                status.segments += 1;
                status.bytes += fs::metadata(&path)?.len();
                let scan = scan(&path)?;
                status.records += scan.records.len() as u64;
                status.torn_tails += u64::from(scan.torn);
                status.corrupt_frames += scan.corrupt;
                let oldest = scan.records.iter().map(|r| r.started_at).min();
                status.oldest = match (status.oldest, oldest) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            Some("corrupt") => status.set_aside += 1,
            _ => {}
        }
    }
    Ok(status)
}

/// What opening a spool found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// Records found, waiting to be replayed.
    pub(crate) records: u64,
    /// Torn tails truncated.
    pub(crate) torn: u64,
    /// Corrupt frames skipped (and files set aside).
    pub(crate) corrupt: u64,
    /// Segments that could not be read, left in place.
    pub(crate) skipped: u64,
}

struct Segment {
    path: PathBuf,
    /// Frames not yet replayed, loaded when the segment reaches the head.
    pending: Option<VecDeque<UsageRecord>>,
    /// Records handed out by [`Spool::take`] and not yet consumed or restored.
    taken: usize,
    records: u64,
    bytes: u64,
    /// Failed reads in a row of this segment (a transient error is tried again).
    read_failures: u32,
}

/// Reads of a segment that fail in a row before it is skipped as unreadable.
const READ_ATTEMPTS: u32 = 3;

/// The spool directory, owned by the worker.
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    fsync: Fsync,
    /// A segment this large is closed and a new one started.
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writer: Option<File>,
    unsynced_since: Option<Instant>,
    /// Never reused, so a segment that could not be deleted is never appended to again.
    next_sequence: u64,
    records: u64,
    bytes: u64,
    /// Records of segments skipped because their file vanished or could not be read, in all.
    lost: u64,
    /// Segments skipped so (at open or at replay), in all.
    skipped: u64,
    /// Held while the spool is open: one process (or tracker) per directory.
    _lock: File,
}

/// The file in a spool directory that its owner keeps locked.
const LOCK_FILE: &str = "spool.lock";

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("records", &self.records)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// The spool is at its size limit.
#[derive(Debug)]
pub(crate) struct Full;

impl Spool {
    /// Opens (creating) the spool directory and checks every segment in it.
    ///
    /// Fails if another spool (in this process or another) has the directory open: two owners
    /// would replay, delete and append to the same segments.
    pub(crate) fn open(dir: &Path, max_bytes: u64, fsync: Fsync) -> io::Result<(Spool, Recovery)> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the spool directory is in use by another tracker or process (its spool.lock \
                     is held); stop it first",
                ));
            }
            Err(fs::TryLockError::Error(error)) => return Err(error),
        }
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(sequence) = name
                .strip_prefix("spool-")
                .and_then(|rest| rest.strip_suffix(".seg"))
                .and_then(|digits| digits.parse().ok())
            {
                found.push((sequence, path));
            }
        }
        found.sort();
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let next_sequence = found.last().map_or(1, |(sequence, _)| sequence + 1);
        for (_, path) in found {
            // A read error is not corruption: tried again, and if it persists the segment is
            // skipped (left in place for the next start) and counted.
            let mut attempt = 1;
            let scan = loop {
                match scan(&path) {
                    Ok(scan) => break Some(scan),
                    Err(_) if attempt < READ_ATTEMPTS => attempt += 1,
                    Err(error) => {
                        tracing::error!(
                            file = %path.display(),
                            %error,
                            "usage spool: a segment cannot be read; left for the next start"
                        );
                        break None;
                    }
                }
            };
            let Some(scan) = scan else {
                recovery.skipped += 1;
                continue;
            };
            recovery.torn += u64::from(scan.torn);
            recovery.corrupt += scan.corrupt;
            if scan.records.is_empty() {
                let result = if scan.corrupt > 0 {
                    fs::rename(&path, path.with_extension("corrupt"))
                } else {
                    fs::remove_file(&path)
                };
                if let Err(error) = result {
                    tracing::error!(file = %path.display(), %error, "usage spool: cannot clear a segment");
                }
                continue;
            }
            if scan.torn {
                let truncated = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|file| file.set_len(scan.good_bytes));
                if let Err(error) = truncated {
                    tracing::error!(file = %path.display(), %error, "usage spool: cannot truncate a torn tail");
                } else {
                    tracing::warn!(file = %path.display(), "usage spool: truncated a torn tail");
                }
            }
            let count = scan.records.len() as u64;
            recovery.records += count;
            // Only the head's records are kept in memory; the others are read when they reach it.
            let pending = segments.is_empty().then(|| scan.records.into());
            segments.push_back(Segment {
                path,
                records: count,
                bytes: scan.good_bytes,
                pending,
                taken: 0,
                read_failures: 0,
            });
        }
        if recovery.corrupt > 0 {
            tracing::error!(
                frames = recovery.corrupt,
                "usage spool: corrupt frames skipped"
            );
        }
        let records = segments.iter().map(|s| s.records).sum();
        let bytes = segments.iter().map(|s| s.bytes).sum();
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            fsync,
            segment_bytes: SEGMENT_BYTES,
            segments,
            writer: None,
            unsynced_since: None,
            next_sequence,
            records,
            bytes,
            lost: 0,
            skipped: recovery.skipped,
            _lock: lock,
        };
        Ok((spool, recovery))
    }

    /// Records waiting in the spool.
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// Bytes the spool's segments take.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Appends `records`, all or none: fails with [`Full`] if they would pass the size limit.
    pub(crate) fn append(
        &mut self,
        records: &[UsageRecord],
    ) -> Result<Result<(), Full>, io::Error> {
        let mut frames = Vec::with_capacity(records.len() * 600);
        for record in records {
            let payload = serde_json::to_vec(record).map_err(io::Error::other)?;
            if payload.len() > MAX_FRAME {
                return Err(io::Error::other(format!(
                    "a record of {} bytes is larger than a spool frame may be",
                    payload.len()
                )));
            }
            frames.extend_from_slice(&MAGIC);
            frames.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            frames.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            frames.extend_from_slice(&payload);
        }
        if self.bytes + frames.len() as u64 > self.max_bytes {
            return Ok(Err(Full));
        }
        // A tail whose file was deleted would take appends into an unlinked file, lost at the
        // next start: a new segment is started instead (the old one's records stay counted
        // until replay finds it gone).
        let rotate = match self.segments.back() {
            Some(tail) => {
                self.writer.is_none() || tail.bytes >= self.segment_bytes || !tail.path.exists()
            }
            None => true,
        };
        if rotate {
            self.start_segment()?;
        }
        let before = self.segments.back().expect("a tail segment").bytes;
        let writer = self.writer.as_mut().expect("a segment open for writing");
        let kept = writer.write_all(&frames).and_then(|()| {
            self.unsynced_since.get_or_insert_with(Instant::now);
            self.sync_if_due(false)
        });
        if let Err(error) = kept {
            // The caller counts these records as not kept, so none of them may stay behind to
            // be replayed later: cut the segment back to where this append began.
            self.undo_append(before);
            return Err(error);
        }
        let tail = self.segments.back_mut().expect("a tail segment");
        tail.records += records.len() as u64;
        tail.bytes += frames.len() as u64;
        if let Some(pending) = &mut tail.pending {
            pending.extend(records.iter().cloned());
        }
        self.records += records.len() as u64;
        self.bytes += frames.len() as u64;
        Ok(Ok(()))
    }

    /// Cuts the tail segment back to `length` after a failed append. If that fails too, the
    /// segment is closed (the next append starts another) and the failure logged: the frames
    /// that did reach it would be read back at the next start.
    fn undo_append(&mut self, length: u64) {
        let cut = match &self.writer {
            Some(writer) => writer.set_len(length),
            None => return,
        };
        if let Err(error) = cut {
            self.writer = None;
            tracing::error!(
                %error,
                "usage spool: a failed append could not be undone; records it wrote before \
                 failing may be replayed at the next start"
            );
        }
    }

    /// Forces appended frames to disk when the policy says it is time (or always, if `force`).
    pub(crate) fn sync_if_due(&mut self, force: bool) -> io::Result<()> {
        let Some(since) = self.unsynced_since else {
            return Ok(());
        };
        let due = force
            || match self.fsync {
                Fsync::Always => true,
                Fsync::Interval(interval) => since.elapsed() >= interval,
                Fsync::Never => false,
            };
        if due {
            if let Some(writer) = &self.writer {
                writer.sync_data()?;
            }
            self.unsynced_since = None;
        }
        Ok(())
    }

    /// When appended frames must next be forced to disk, under `Fsync::Interval`.
    pub(crate) fn sync_due_at(&self) -> Option<Instant> {
        match (self.fsync, self.unsynced_since) {
            (Fsync::Interval(interval), Some(since)) => Some(since + interval),
            _ => None,
        }
    }

    fn start_segment(&mut self) -> io::Result<()> {
        // What went to the segment being closed is forced to disk first.
        if let Some(previous) = self.writer.take() {
            previous.sync_data()?;
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let path = self.dir.join(format!("spool-{sequence:020}.seg"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        // The new file's name must survive a crash too.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        self.writer = Some(file);
        // Only the head keeps its records in memory (for replay); a segment behind it is read
        // back from disk when it becomes the head, so a long outage costs disk, not memory.
        let pending = self.segments.is_empty().then(VecDeque::new);
        self.segments.push_back(Segment {
            path,
            pending,
            taken: 0,
            records: 0,
            bytes: 0,
            read_failures: 0,
        });
        Ok(())
    }

    /// Up to `max` of the oldest records not yet handed out, moved out of memory (not copied)
    /// but counted, and kept on disk, until [`consume`](Self::consume) drops them or
    /// [`restore`](Self::restore) hands them back.
    pub(crate) fn take(&mut self, max: usize) -> io::Result<Vec<UsageRecord>> {
        // A segment that counts no record, with others after it, was closed by a failed append
        // that could not be undone: whatever it holds was counted as failed. It goes.
        while self.segments.len() > 1
            && self
                .segments
                .front()
                .is_some_and(|s| s.records == 0 && s.taken == 0)
        {
            let empty = self.segments.pop_front().expect("head");
            self.bytes = self.bytes.saturating_sub(empty.bytes);
            if let Err(error) = fs::remove_file(&empty.path) {
                tracing::error!(file = %empty.path.display(), %error, "usage spool: cannot clear a segment");
            }
        }
        let scanned = loop {
            let Some(head) = self.segments.front_mut() else {
                return Ok(Vec::new());
            };
            if head.pending.is_some() {
                break None;
            }
            match scan(&head.path) {
                Ok(scan) => break Some(scan),
                // Gone (a cleaner, an operator), or failing every time: skipped and counted, so
                // the rest is replayed and new records are written.
                Err(error)
                    if error.kind() == io::ErrorKind::NotFound || {
                        head.read_failures += 1;
                        head.read_failures >= READ_ATTEMPTS
                    } =>
                {
                    self.skip_head(&error);
                }
                // Tried again at the next replay.
                Err(error) => return Err(error),
            }
        };
        let head = self.segments.front_mut().expect("a head segment");
        if let Some(scanned) = scanned {
            let mut records: VecDeque<UsageRecord> = scanned.records.into();
            // Frames past the counted ones are what a failed append left (counted as failed).
            records.truncate(usize::try_from(head.records).unwrap_or(usize::MAX));
            let read = records.len() as u64;
            if read < head.records {
                // Fewer than were appended: the file was damaged since. Count what is there.
                tracing::error!(
                    file = %head.path.display(),
                    lost = head.records - read,
                    "usage spool: a segment holds fewer records than were appended to it"
                );
                self.records = self.records.saturating_sub(head.records - read);
                self.lost += head.records - read;
                head.records = read;
            }
            head.pending = Some(records);
        }
        let pending = head.pending.as_mut().expect("loaded");
        let count = max.min(pending.len());
        head.taken += count;
        Ok(pending.drain(..count).collect())
    }

    /// Hands back records [`take`](Self::take) handed out (not written): they are the oldest
    /// again.
    pub(crate) fn restore(&mut self, records: Vec<UsageRecord>) {
        let Some(head) = self.segments.front_mut() else {
            return;
        };
        let pending = head.pending.as_mut().expect("taken before restored");
        head.taken = head.taken.saturating_sub(records.len());
        for record in records.into_iter().rev() {
            pending.push_front(record);
        }
    }

    /// Drops the `count` records [`take`](Self::take) handed out (written or quarantined);
    /// deletes a segment once all its records are gone.
    pub(crate) fn consume(&mut self, count: usize) -> io::Result<()> {
        let Some(head) = self.segments.front_mut() else {
            return Ok(());
        };
        let count = count.min(head.taken);
        head.taken -= count;
        self.records = self.records.saturating_sub(count as u64);
        let pending = head.pending.as_ref().expect("taken before consumed");
        if pending.is_empty() && head.taken == 0 {
            let head = self.segments.pop_front().expect("head");
            if self.segments.is_empty() {
                self.writer = None; // the head was the tail being written
                self.unsynced_since = None;
            }
            self.bytes = self.bytes.saturating_sub(head.bytes);
            match fs::remove_file(&head.path) {
                // Already gone: nothing to delete.
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        Ok(())
    }

    /// Drops the head segment, whose file vanished or cannot be read, counting its records as
    /// lost.
    fn skip_head(&mut self, error: &io::Error) {
        let gone = self.segments.pop_front().expect("a head segment");
        if self.segments.is_empty() {
            self.writer = None; // it was the tail being written
            self.unsynced_since = None;
        }
        // Set aside (when it is still there), so a later start does not replay records counted
        // as lost here.
        let set_aside = gone.path.exists()
            && fs::rename(&gone.path, gone.path.with_extension("unreadable")).is_ok();
        self.records = self.records.saturating_sub(gone.records);
        self.bytes = self.bytes.saturating_sub(gone.bytes);
        self.lost += gone.records;
        self.skipped += 1;
        tracing::error!(
            file = %gone.path.display(),
            %error,
            lost = gone.records,
            set_aside,
            "usage spool: a segment vanished or cannot be read; its records are lost, the rest \
             is replayed"
        );
    }

    /// Records of segments skipped because their file vanished or could not be read, in all.
    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }

    /// Segments skipped as vanished or unreadable (at open or at replay), in all.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }
}

struct Scan {
    records: Vec<UsageRecord>,
    /// Bytes up to the end of the last good frame.
    good_bytes: u64,
    torn: bool,
    corrupt: u64,
}

/// Reads every frame of a segment: a frame cut short at the end is a torn tail; a frame whose
/// checksum or JSON is wrong is corrupt, and reading resumes at the next magic.
fn scan(path: &Path) -> io::Result<Scan> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut scan = Scan {
        records: Vec::new(),
        good_bytes: 0,
        torn: false,
        corrupt: 0,
    };
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < HEADER {
            // A header cut short at the end is a torn tail; anything else there is junk.
            if MAGIC.starts_with(&rest[..rest.len().min(MAGIC.len())]) {
                scan.torn = true;
            } else {
                scan.corrupt += 1;
            }
            break;
        }
        let length = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
        let next = find_magic(&data, at + 1);
        if rest[..4] != MAGIC || length > MAX_FRAME {
            scan.corrupt += 1;
        } else if HEADER + length > rest.len() {
            // Cut short: a torn tail when nothing follows, else a damaged length.
            if next.is_none() {
                scan.torn = true;
                break;
            }
            scan.corrupt += 1;
        } else {
            let payload = &rest[HEADER..HEADER + length];
            let record = (crc32c::crc32c(payload) == crc)
                .then(|| serde_json::from_slice::<UsageRecord>(payload).ok())
                .flatten();
            if let Some(record) = record {
                scan.records.push(record);
                at += HEADER + length;
                scan.good_bytes = at as u64;
                continue;
            }
            scan.corrupt += 1;
        }
        // Resume at the next frame, if any.
        match next {
            Some(next) => at = next,
            None => break,
        }
    }
    Ok(scan)
}

fn find_magic(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(MAGIC.len())
        .position(|window| window == MAGIC)
        .map(|offset| from + offset)
}

#[cfg(test)]
mod tests;
