//! `#[derive(UsageReport)]`: `parse` reads the `#[usage(...)]` attributes into a borrowing AST,
//! `valid` checks the rules between them, `expand` generates `UsageReport::usage`, which adds up
//! the marked fields; one phase per file, like the attribute's.

mod expand;
mod parse;
mod valid;

pub(crate) use expand::derive;
