use usage_runtime::testing::Capture;
use usage_runtime::{track_usage, Outcome};

#[derive(Debug)]
struct MyErr;
impl std::fmt::Display for MyErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad")
    }
}

#[track_usage(operation = "add", tenant = "acme", user = who)]
fn add(a: u32, b: u32, who: &str) -> Result<u32, MyErr> {
    if a == 0 {
        return Err(MyErr);
    }
    Ok(a + b)
}

#[track_usage]
async fn asyncy(x: u32) -> Result<u32, MyErr> {
    let y: u32 = "3".parse().map_err(|_| MyErr)?;
    Ok(x + y)
}

#[test]
fn smoke() {
    let c = Capture::new();
    c.run(|| {
        add(1, 2, "u1").unwrap();
        add(0, 2, "u1").unwrap_err();
    });
    let r = c.records();
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].outcome, Outcome::Error);
    assert_eq!(r[1].error_message.as_deref(), Some("bad"));
    println!("{r:#?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(c.run_async(async { asyncy(1).await.unwrap() }));
    assert_eq!(c.records().len(), 3);
}
