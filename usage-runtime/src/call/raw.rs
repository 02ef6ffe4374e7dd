//! A finished call as it travels from the hot path to the worker (which makes its record, in
//! `pipeline::record`).

use super::catalog::Operation;
use super::dimension::Dimensions;
use super::tokens::Tally;
use crate::record::Outcome;

/// What the hot path hands over: static metadata by reference, two clock readings,
/// an interned tenant, the token usage when the call has any, and one box of rarer extras only
/// when the call has them: 64 bytes.
#[derive(Debug)]
pub(crate) struct RawCall {
    pub(crate) op: &'static Operation,
    pub(crate) start: quanta::Instant,
    /// When the call ended: the worker works out the duration.
    pub(crate) end: quanta::Instant,
    pub(crate) outcome: Outcome,
    pub(crate) tenant: Option<&'static str>,
    /// The box the call's usage was tallied in, handed on as it is.
    pub(crate) tokens: Option<Box<Tally>>,
    pub(crate) extras: Option<Box<Extras>>,
}

/// The rarer parts of a call: an error, declared dimensions.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    pub(crate) error: Option<Box<ErrorDetails>>,
    pub(crate) dims: Option<Box<Dimensions>>,
}

impl Extras {
    /// `None` when there is nothing to carry.
    pub(crate) fn of(
        error: Option<Box<ErrorDetails>>,
        dims: Option<Box<Dimensions>>,
    ) -> Option<Box<Extras>> {
        if error.is_none() && dims.is_none() {
            return None;
        }
        Some(Box::new(Extras { error, dims }))
    }
}

#[derive(Debug)]
pub(crate) struct ErrorDetails {
    pub(crate) error_type: String,
    pub(crate) message: Option<String>,
}

const _: () = assert!(
    std::mem::size_of::<RawCall>() <= 64,
    "a queue slot per cache line"
);
