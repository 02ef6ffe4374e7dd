//! Compile errors of `#[track_usage]`, one concern per file, each at the offending token.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*/*.rs");
}
