//! The error collector both macros share (serde_derive's `Ctxt`): every mistake is pushed here at
//! its own token and parsing goes on, so one compile reports them all, folded into one
//! `syn::Error` with [`syn::Error::combine`].

use proc_macro2::{Span, TokenStream};

/// Mistakes found so far.
#[derive(Default)]
pub(crate) struct Errors {
    error: Option<syn::Error>,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.error {
            Some(existing) => existing.combine(error),
            None => self.error = Some(error),
        }
    }

    pub(crate) fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Takes over every mistake `other` holds, after the ones already here.
    pub(crate) fn extend(&mut self, other: Errors) {
        if let Some(error) = other.error {
            self.push(error);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.error.is_none()
    }

    /// One `compile_error!` per mistake; empty when there is none.
    pub(crate) fn to_compile_errors(&self) -> TokenStream {
        self.error
            .as_ref()
            .map(syn::Error::to_compile_error)
            .unwrap_or_default()
    }
}
