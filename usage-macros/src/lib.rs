//! Procedural macros behind `usage-runtime`.
//!
//! Depend on `usage-runtime` and use `usage_runtime::track_usage`: the runtime crate re-exports these
//! macros and documents them. Each macro is parsed (`parse`), checked (`valid`) and generated
//! (`expand`), one phase per file: the attribute's at the top, the derive's under `report`. Both
//! gather their mistakes in `errors`.

mod errors;
mod expand;
mod parse;
mod report;
mod valid;

use proc_macro::TokenStream;

/// Tracks every call of a fn (or of every method of an impl block). Documented on the re-export
/// `usage_runtime::track_usage`.
#[proc_macro_attribute]
pub fn track_usage(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::track_usage(args.into(), item.into()).into()
}

/// Implements `UsageReport` from `#[usage(...)]` field attributes. Documented on the re-export
/// `usage_runtime::UsageReport`.
#[proc_macro_derive(UsageReport, attributes(usage))]
pub fn derive_usage_report(input: TokenStream) -> TokenStream {
    report::derive(input.into()).into()
}

#[cfg(test)]
mod snapshots;
