//! The SQL sinks against real databases: SQLite files in temporary folders, the PostgreSQL server
//! of `USAGE_TEST_POSTGRES_URL` and the MySQL / MariaDB server of `USAGE_TEST_MYSQL_URL`.
//!
//! Each behaviour the sinks share is written once, as an `async fn` taking a `Backend`, and
//! `conformance!` runs it on each backend it holds for as `<module>::<behaviour>::sqlite`,
//! `::postgres` and `::mysql` (so `cargo test -p tests --test sql_sinks postgres` runs every
//! PostgreSQL test). Each test writes to its own tables (a fresh prefix, or a fresh SQLite file),
//! so tests run in parallel; those that install the global tracker take [`serial`] first.
//!
//! - [`backend`]: the backends, the sink of each (`AnySink`), a fresh place to write (`Db`)
//!   and a raw connection for checks (`Conn`), with the expressions each dialect needs.
//! - [`writes`]: tracked calls as rows, idempotent writes, awkward values, saturating sums, the
//!   operation catalog, retention.
//! - [`rollups`]: rollups equal the raw records; split batches that fail in part.
//! - [`tokens`]: every token kind and the price id stored and rolled up; a database of the
//!   previous schema gains them in place.
//! - [`connect`]: verification, and the step each connection or schema failure is named by.
//! - [`sqlite`], [`postgres`], [`mysql`]: what only one backend does, as plain tests named
//!   `<backend>::<behaviour>`: SQLite's files, WAL, in-memory databases, upgrades, a table
//!   dropped under the tracker, a corrupt histogram; native column types, what NUL bytes and
//!   the largest token counts become, wrong passwords, `Debug` output; MySQL's `replays`.
//!
//! `cargo test -p tests --test sql_sinks -- --list` lists every test by these names.
#![allow(missing_debug_implementations)]
// `serial()` holds a std lock for a whole test, each on its own runtime: nothing else awaits it.
#![allow(clippy::await_holding_lock)]

use usage_runtime::{error::DbStep, track_usage, Error};

#[macro_use]
mod backend;
mod connect;
mod mysql;
mod postgres;
mod rollups;
mod sqlite;
mod tokens;
mod writes;

use tests::serial;

#[track_usage(operation = "chat", tenant = org, user = user, fields(model = "gpt-4o"))]
async fn chat(org: &str, user: &str, fail: bool) -> Result<u32, String> {
    if fail {
        Err("model overloaded".into())
    } else {
        Ok(1)
    }
}

#[derive(usage_runtime::UsageReport)]
struct Completion {
    #[usage(model)]
    model: &'static str,
    #[usage(input_tokens)]
    input: u64,
    #[usage(output_tokens)]
    output: u64,
    #[usage(cached_input_tokens)]
    cached: u64,
}

/// Tracked by the SQLite upgrade test; never called elsewhere, yet in every catalog.
#[track_usage(operation = "complete")]
fn complete(input: u64) -> Completion {
    Completion {
        model: "gpt-4o",
        input,
        output: 1000,
        cached: 0,
    }
}

/// The step a database error names.
fn step_of(error: &Error) -> DbStep {
    match error {
        Error::Database { step, .. } => *step,
        other => panic!("expected a database error, got {other:?}"),
    }
}
