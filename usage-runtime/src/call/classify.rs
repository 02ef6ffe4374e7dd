//! Classifying a returned value as success or error.
//!
//! `Err` of any `Result` is an error. Any other type is a success unless it implements
//! [`Classify`], which lets a type decide for itself (an HTTP response with a 5xx status, a tool
//! result that carries a failure flag). The generated code picks the most specific rule with
//! autoref specialization, so types that implement nothing still compile.

use std::fmt;

/// Lets a returned type classify itself as success or error.
///
/// ```
/// use usage_runtime::classify::{Classification, Classify};
///
/// struct Response {
///     status: u16,
/// }
///
/// impl Classify for Response {
///     fn classify(&self) -> Classification<'_> {
///         if self.status >= 500 {
///             Classification::error("http_5xx")
///         } else {
///             Classification::Success
///         }
///     }
/// }
///
/// #[usage_runtime::track_usage]
/// fn handler() -> Response {
///     Response { status: 503 }
/// }
/// # handler();
/// ```
pub trait Classify {
    /// Success, or an error with its type and (optionally) its text.
    fn classify(&self) -> Classification<'_>;
}

/// The verdict on a returned value.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Classification<'a> {
    /// The call succeeded.
    Success,
    /// The call failed.
    Error {
        /// Stored as the record's `error_type`.
        error_type: &'a str,
        /// Formatted with `{:#}` into the record's `error_message`, unless the operation has
        /// `error_message = false`.
        message: Option<&'a dyn fmt::Display>,
    },
}

impl<'a> Classification<'a> {
    /// An error of the given type, without text.
    pub fn error(error_type: &'a str) -> Self {
        Classification::Error {
            error_type,
            message: None,
        }
    }

    /// An error of the given type with text.
    pub fn error_with_message(error_type: &'a str, message: &'a dyn fmt::Display) -> Self {
        Classification::Error {
            error_type,
            message: Some(message),
        }
    }

    /// Whether this is a success.
    pub fn is_success(&self) -> bool {
        matches!(self, Classification::Success)
    }
}

impl fmt::Debug for Classification<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Classification::Success => f.write_str("Success"),
            Classification::Error { error_type, .. } => f
                .debug_struct("Error")
                .field("error_type", error_type)
                .finish_non_exhaustive(),
        }
    }
}

impl<T, E: fmt::Display> Classify for Result<T, E> {
    fn classify(&self) -> Classification<'_> {
        match self {
            Ok(_) => Classification::Success,
            Err(error) => Classification::error_with_message(std::any::type_name::<E>(), error),
        }
    }
}

// Autoref specialization for generated code: `(&&&Probe(&value)).__usage_verdict()` resolves to the
// first impl that applies: `Classify`, then any `Result` (an error without text when `E` is not
// `Display`), then success.

#[doc(hidden)]
#[derive(Debug)]
pub struct Probe<'a, T: ?Sized>(pub &'a T);

#[doc(hidden)]
pub trait ViaClassify<'a> {
    fn __usage_verdict(&self) -> Classification<'a>;
}

impl<'a, T: Classify + ?Sized> ViaClassify<'a> for &&Probe<'a, T> {
    fn __usage_verdict(&self) -> Classification<'a> {
        self.0.classify()
    }
}

#[doc(hidden)]
pub trait ViaResult<'a> {
    fn __usage_verdict(&self) -> Classification<'a>;
}

impl<'a, T, E> ViaResult<'a> for &Probe<'a, Result<T, E>> {
    fn __usage_verdict(&self) -> Classification<'a> {
        match self.0 {
            Ok(_) => Classification::Success,
            Err(_) => Classification::error(std::any::type_name::<E>()),
        }
    }
}

#[doc(hidden)]
pub trait ViaDefault<'a> {
    fn __usage_verdict(&self) -> Classification<'a>;
}

impl<'a, T: ?Sized> ViaDefault<'a> for Probe<'a, T> {
    fn __usage_verdict(&self) -> Classification<'a> {
        Classification::Success
    }
}

/// `ok_if = f`: success when `f` says so, else an error (keeping the natural error's details).
#[doc(hidden)]
pub fn ok_if<'a>(ok: bool, natural: Classification<'a>, type_name: &'a str) -> Classification<'a> {
    if ok {
        Classification::Success
    } else {
        error_details(natural, type_name)
    }
}

/// `error_if = f`: an error when `f` says so (keeping the natural error's details), else success.
#[doc(hidden)]
pub fn error_if<'a>(
    error: bool,
    natural: Classification<'a>,
    type_name: &'a str,
) -> Classification<'a> {
    if error {
        error_details(natural, type_name)
    } else {
        Classification::Success
    }
}

fn error_details<'a>(natural: Classification<'a>, type_name: &'a str) -> Classification<'a> {
    match natural {
        Classification::Success => Classification::error(type_name),
        error => error,
    }
}

/// Applies an `ok_if` / `error_if` predicate; the bound gives a closure its argument type.
#[doc(hidden)]
pub fn test<T: ?Sized>(value: &T, predicate: impl FnOnce(&T) -> bool) -> bool {
    predicate(value)
}

#[doc(hidden)]
pub fn type_name_of_val<T: ?Sized>(_: &T) -> &'static str {
    std::any::type_name::<T>()
}
