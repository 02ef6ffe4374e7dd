//! The call: everything that runs on the caller's thread, from the attribute's entry to the
//! hand-off. The guard times and classifies a call, holds its dimensions and token usage, and on
//! finish pushes one [`RawCall`](raw::RawCall) into the installed tracker's queue
//! ([`handoff`]), without blocking and without I/O. Nothing here depends on the pipeline.

#[cfg(feature = "testing")]
pub(crate) mod capture;
pub(crate) mod catalog;
pub(crate) mod classify;
pub(crate) mod dimension;
pub(crate) mod guard;
pub(crate) mod handoff;
pub(crate) mod intern;
pub mod providers;
pub(crate) mod queue;
pub(crate) mod raw;
pub(crate) mod stream;
pub(crate) mod tokens;
