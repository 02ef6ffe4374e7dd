use super::*;

fn record(n: u32) -> UsageRecord {
    let mut record = UsageRecord::of_call(
        uuid::Uuid::now_v7(),
        (format!("op-{n}").into(), "spool::tests::record".into()),
        ("test".into(), "test".into()),
        chrono::Utc::now(),
        Duration::from_micros(7),
        crate::record::Outcome::Success,
    );
    record.tenant_id = Some("acme".into());
    record.input_tokens = Some(3);
    record
}

/// What opening a spool found: `records` to replay, `torn` tails cut, `corrupt` frames skipped.
fn recovered(records: u64, torn: u64, corrupt: u64) -> Recovery {
    Recovery {
        records,
        torn,
        corrupt,
        skipped: 0,
    }
}

fn open(dir: &Path) -> (Spool, Recovery) {
    Spool::open(dir, u64::MAX, Fsync::Always).unwrap()
}

fn drain(spool: &mut Spool) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let batch = spool.take(3).unwrap();
        if batch.is_empty() {
            return seen;
        }
        seen.extend(batch.iter().map(|r| r.operation.to_string()));
        spool.consume(batch.len()).unwrap();
    }
}

#[test]
fn records_come_back_in_order_and_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(dir.path());
    spool.append(&[record(1), record(2)]).unwrap().unwrap();
    spool.append(&[record(3)]).unwrap().unwrap();
    assert_eq!(spool.records(), 3);
    // Reopened (a restart), then replayed.
    drop(spool);
    let (mut spool, recovery) = open(dir.path());
    assert_eq!(recovery, recovered(3, 0, 0));
    assert_eq!(drain(&mut spool), ["op-1", "op-2", "op-3"]);
    assert_eq!((spool.records(), spool.bytes()), (0, 0));
    assert_eq!(status(dir.path()).unwrap().segments, 0, "segments deleted");
}

#[test]
fn only_the_head_segment_is_held_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool =
        a_segment_per_append(dir.path(), &[&[0, 1], &[2, 3], &[4, 5], &[6, 7], &[8, 9]]);
    let held: Vec<bool> = spool.segments.iter().map(|s| s.pending.is_some()).collect();
    assert_eq!(held, [true, false, false, false, false]);
    // The others are read back from disk as each becomes the head, in order.
    let expected: Vec<String> = (0..10).map(|n| format!("op-{n}")).collect();
    assert_eq!(drain(&mut spool), expected);
    assert_eq!(status(dir.path()).unwrap().segments, 0);
}

#[test]
fn a_failed_append_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(dir.path());
    spool.append(&[record(0)]).unwrap().unwrap();
    let before = (spool.records(), spool.bytes());
    // The segment's writer can no longer write (as on a failing disk).
    let path = segment(dir.path());
    spool.writer = Some(File::open(&path).unwrap());
    assert!(spool.append(&[record(1), record(2)]).is_err());
    assert_eq!((spool.records(), spool.bytes()), before);
    assert_eq!(fs::metadata(&path).unwrap().len(), before.1);
    // The next append goes on (in a new segment), and only what was kept comes back.
    spool.append(&[record(3)]).unwrap().unwrap();
    drop(spool);
    let (mut spool, recovery) = open(dir.path());
    assert_eq!(recovery.records, 2);
    assert_eq!(drain(&mut spool), ["op-0", "op-3"]);
}

/// A spool in `dir` whose every append starts a segment, with `appends` (record numbers) made.
fn a_segment_per_append(dir: &Path, appends: &[&[u32]]) -> Spool {
    let (mut spool, _) = open(dir);
    spool.segment_bytes = 1;
    for numbers in appends {
        let records: Vec<UsageRecord> = numbers.iter().map(|&n| record(n)).collect();
        spool.append(&records).unwrap().unwrap();
    }
    spool
}

#[test]
fn frames_a_failed_append_left_behind_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = a_segment_per_append(dir.path(), &[&[0], &[1]]);
    // An append that failed and could not be undone: its frames reached the tail segment
    // (here, a copy of the frame already there), uncounted, and the segment was closed.
    let tail = spool.segments.back().unwrap().path.clone();
    let frame = fs::read(&tail).unwrap();
    let mut file = OpenOptions::new().append(true).open(&tail).unwrap();
    file.write_all(&frame).unwrap();
    spool.writer = None;
    assert_eq!(spool.records(), 2);
    assert_eq!(drain(&mut spool), ["op-0", "op-1"]);
    assert_eq!((spool.records(), spool.bytes()), (0, 0));
}

#[test]
fn a_segment_damaged_while_open_is_counted_again_not_spun_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = a_segment_per_append(dir.path(), &[&[0], &[1, 2]]);
    // The second segment loses its content on disk (not the head: read when it gets there).
    let tail = spool.segments.back().unwrap().path.clone();
    OpenOptions::new()
        .write(true)
        .open(&tail)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(drain(&mut spool), ["op-0"]);
    assert_eq!(spool.records(), 0, "what is gone is no longer counted");
}

#[test]
fn a_directory_is_owned_by_one_spool_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = open(dir.path());
    let err = Spool::open(dir.path(), u64::MAX, Fsync::Always).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(err.to_string().contains("in use"), "{err}");
    drop(first);
    let (_second, _) = open(dir.path());
    // The lock file is not mistaken for a segment.
    assert_eq!(status(dir.path()).unwrap(), SpoolStatus::default());
}

#[test]
fn the_size_limit_refuses_whole_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 2000, Fsync::Never).unwrap();
    spool.append(&[record(1)]).unwrap().unwrap();
    let before = spool.records();
    assert!(spool.append(&vec![record(2); 10]).unwrap().is_err());
    assert_eq!(spool.records(), before);
}

fn segment(dir: &Path) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap()
}

/// Spools records 1 to 3 in `dir` and closes the spool; answers its segment.
fn spooled_three(dir: &Path) -> PathBuf {
    let (mut spool, _) = open(dir);
    spool
        .append(&[record(1), record(2), record(3)])
        .unwrap()
        .unwrap();
    drop(spool);
    segment(dir)
}

/// Spools records 1 to 3, damages the segment, reopens: answers the recovery and what is left.
fn reopened_after(damage: impl FnOnce(&Path)) -> (Recovery, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    damage(&spooled_three(dir.path()));
    let (mut spool, recovery) = open(dir.path());
    (recovery, drain(&mut spool))
}

#[test]
fn a_torn_tail_is_truncated_and_counted() {
    let (recovery, left) = reopened_after(|path| {
        let len = fs::metadata(path).unwrap().len();
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(len - 10).unwrap();
    });
    assert_eq!(recovery, recovered(2, 1, 0));
    assert_eq!(left, ["op-1", "op-2"]);
}

#[test]
fn a_corrupt_frame_in_the_middle_is_skipped_and_counted() {
    let (recovery, left) = reopened_after(|path| {
        let mut data = fs::read(path).unwrap();
        let second = find_magic(&data, 1).unwrap();
        data[second + HEADER + 5] ^= 0xff; // flip bits in the second payload
        fs::write(path, &data).unwrap();
    });
    assert_eq!(recovery, recovered(2, 0, 1));
    assert_eq!(left, ["op-1", "op-3"]);
}

#[test]
fn empty_and_junk_files_never_stop_a_start() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("spool-00000000000000000001.seg"), b"").unwrap();
    fs::write(
        dir.path().join("spool-00000000000000000002.seg"),
        b"not a spool at all",
    )
    .unwrap();
    fs::write(dir.path().join("notes.txt"), b"left alone").unwrap();
    let (mut spool, recovery) = open(dir.path());
    assert_eq!(recovery.records, 0);
    assert_eq!(recovery.corrupt, 1);
    assert!(spool.is_empty());
    assert!(dir
        .path()
        .join("spool-00000000000000000002.corrupt")
        .exists());
    assert!(!dir.path().join("spool-00000000000000000001.seg").exists());
    // And it keeps working.
    spool.append(&[record(9)]).unwrap().unwrap();
    assert_eq!(drain(&mut spool), ["op-9"]);
}

#[test]
fn a_vanished_segment_is_skipped_and_counted_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = a_segment_per_append(dir.path(), &[&[1], &[2], &[3]]);
    // A cleaner deletes the middle segment while the spool is open.
    let mut segments: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    assert_eq!(segments.len(), 3);
    fs::remove_file(&segments[1]).unwrap();
    assert_eq!(drain(&mut spool), ["op-1", "op-3"]);
    assert_eq!((spool.lost(), spool.skipped()), (1, 1));
    assert!(spool.is_empty());
    assert_eq!(spool.records(), 0);
}

#[test]
fn records_appended_after_the_tail_was_deleted_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(dir.path());
    spool.append(&[record(1)]).unwrap().unwrap();
    let tail = segment(dir.path());
    fs::remove_file(&tail).unwrap();
    spool.append(&[record(2)]).unwrap().unwrap();
    drop(spool);
    // The second record went to a new segment, not to the unlinked file.
    let (mut spool, recovery) = open(dir.path());
    assert_eq!(recovery.records, 1);
    assert_eq!(drain(&mut spool), ["op-2"]);
}

#[test]
fn records_handed_back_are_the_oldest_again_and_stay_until_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let path = spooled_three(dir.path());
    let (mut spool, _) = open(dir.path());
    let first = spool.take(2).unwrap();
    assert_eq!(spool.records(), 3, "taken records are still counted");
    spool.restore(first);
    let again = spool.take(3).unwrap();
    let names: Vec<_> = again.iter().map(|r| r.operation.to_string()).collect();
    assert_eq!(names, ["op-1", "op-2", "op-3"]);
    spool.consume(2).unwrap();
    assert!(
        path.exists(),
        "a record taken and not consumed keeps its segment"
    );
    assert_eq!(spool.records(), 1);
    spool.consume(1).unwrap();
    assert!(!path.exists() && spool.is_empty());
}
