//! A JSON lines write cut short, as on a full disk: the file size limit (`RLIMIT_FSIZE`) makes
//! the kernel stop a write part way. In a binary of its own, since the limit is the process's.

use usage_runtime::sink::{JsonLinesSink, Sink};
use usage_runtime::testing::Capture;
use usage_runtime::track_usage;

#[track_usage(operation = "short", fields(n = n))]
fn work(n: u32) -> u32 {
    n
}

/// Sets the soft limit on the size of files this process writes.
fn limit_file_size(bytes: libc::rlim_t) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system calls on this process with a valid struct; ignoring SIGXFSZ makes a
    // write past the limit fail with EFBIG instead of ending the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

#[tokio::test]
async fn a_short_write_is_cut_back_and_the_retry_leaves_whole_lines() {
    let capture = Capture::new();
    capture.run(|| {
        for n in 0..20 {
            work(n);
        }
    });
    let records = capture.records();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.jsonl");
    let mut sink = JsonLinesSink::create(&path).unwrap();
    sink.write(&records[..5]).await.unwrap();
    let whole = std::fs::metadata(&path).unwrap().len();

    limit_file_size(whole + 100);
    let error = sink.write(&records[5..]).await.unwrap_err();
    limit_file_size(libc::RLIM_INFINITY);
    assert!(error.to_string().contains("usage.jsonl"), "{error}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        whole,
        "the part that reached the file is cut back"
    );

    // The retry, as the worker makes it: every line is a whole record.
    sink.write(&records[5..]).await.unwrap();
    let read = tests::jsonl_records(&path);
    assert_eq!(read.len(), 20);
    assert_eq!(
        read.iter().map(|r| r.id).collect::<Vec<_>>(),
        records.iter().map(|r| r.id).collect::<Vec<_>>()
    );
}
