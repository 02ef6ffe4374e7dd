//! LLM token counts and the model: read off a handler's result ([`UsageReport`]), from the
//! attribute (`tokens = ...`, `model = ...`), or recorded inside the body ([`record_tokens`],
//! [`set_model`]).
//!
//! Counts follow OpenAI's convention: `input_tokens` is every input token, *including* the ones
//! served from a prompt cache, and `cached_input_tokens` says how many of them were cached. For a
//! provider that reports cache reads separately (Anthropic's `cache_read_input_tokens`), mark that
//! field as both `input_tokens` and `cached_input_tokens`: fields of the same kind are added.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// Token counts and model of one call, as a [`UsageReport`] gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenUsage<'a> {
    /// Input (prompt) tokens, cached ones included.
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens.
    pub output_tokens: Option<u64>,
    /// How many of the input tokens were read from a prompt cache.
    pub cached_input_tokens: Option<u64>,
    /// The model that served the call.
    pub model: Option<Cow<'a, str>>,
    /// Whether a count overflowed while being added up and was held at `u64::MAX`.
    pub saturated: bool,
}

impl<'a> TokenUsage<'a> {
    /// No counts, no model.
    pub fn new() -> Self {
        Self::default()
    }

    /// With these input and output counts.
    pub fn tokens(input: u64, output: u64) -> Self {
        TokenUsage {
            input_tokens: Some(input),
            output_tokens: Some(output),
            ..Self::default()
        }
    }

    /// Sets the cached-input count.
    pub fn with_cached_input_tokens(mut self, cached: u64) -> Self {
        self.cached_input_tokens = Some(cached);
        self
    }

    /// Sets the model.
    pub fn with_model(mut self, model: impl Into<Cow<'a, str>>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Adds `other`'s counts to these, saturating at `u64::MAX` (and setting `saturated`), and
    /// takes its model when this has none.
    pub fn merge(&mut self, other: TokenUsage<'a>) {
        self.saturated |= other.saturated;
        self.saturated |= add_count(&mut self.input_tokens, other.input_tokens);
        self.saturated |= add_count(&mut self.output_tokens, other.output_tokens);
        self.saturated |= add_count(&mut self.cached_input_tokens, other.cached_input_tokens);
        if self.model.is_none() {
            self.model = other.model;
        }
    }

    /// Whether there is anything in it.
    pub fn is_empty(&self) -> bool {
        self.input_tokens.is_none()
            && self.output_tokens.is_none()
            && self.cached_input_tokens.is_none()
            && self.model.is_none()
    }

    pub(crate) fn into_owned(self) -> TokenUsage<'static> {
        TokenUsage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cached_input_tokens,
            // Interned: a model repeats on every call, so the hot path does not copy it.
            model: self.model.as_deref().map(crate::call::intern::intern_model),
            saturated: self.saturated,
        }
    }
}

fn add_count(total: &mut Option<u64>, count: Option<u64>) -> bool {
    let Some(count) = count else {
        return false;
    };
    let sum = total.map_or(count, |sum| sum.saturating_add(count));
    *total = Some(sum);
    // Held at `u64::MAX`: a sum overflowed, or a wider count (`u128`, `i128`) did not fit. No
    // real count reaches it.
    sum == u64::MAX
}

/// A value that reports the LLM usage of the call that returned it: an API response, a chat
/// completion, a stream chunk. Derive it with `#[derive(UsageReport)]`.
///
/// When a tracked fn returns `T` or `Result<T, E>` (or `Option<T>`) and `T: UsageReport`, the
/// counts and model land on the record with nothing written in the attribute.
///
/// ```
/// use usage_runtime::UsageReport;
///
/// #[derive(UsageReport)]
/// struct ChatCompletion {
///     #[usage(model)]
///     model: String,
///     #[usage(flatten)]
///     usage: Usage,
/// }
///
/// #[derive(UsageReport)]
/// struct Usage {
///     #[usage(input_tokens)]
///     prompt_tokens: u32,
///     #[usage(output_tokens)]
///     completion_tokens: u32,
/// }
///
/// let completion = ChatCompletion {
///     model: "gpt-4o".into(),
///     usage: Usage { prompt_tokens: 12, completion_tokens: 30 },
/// };
/// let usage = completion.usage();
/// assert_eq!((usage.input_tokens, usage.output_tokens), (Some(12), Some(30)));
/// assert_eq!(usage.model.as_deref(), Some("gpt-4o"));
/// ```
pub trait UsageReport {
    /// The counts and model this value reports.
    fn usage(&self) -> TokenUsage<'_>;
}

impl<T: UsageReport + ?Sized> UsageReport for &T {
    fn usage(&self) -> TokenUsage<'_> {
        (**self).usage()
    }
}

impl<T: UsageReport + ?Sized> UsageReport for Box<T> {
    fn usage(&self) -> TokenUsage<'_> {
        (**self).usage()
    }
}

impl<T: UsageReport + ?Sized> UsageReport for Arc<T> {
    fn usage(&self) -> TokenUsage<'_> {
        (**self).usage()
    }
}

impl<T: UsageReport> UsageReport for Option<T> {
    fn usage(&self) -> TokenUsage<'_> {
        self.as_ref().map(T::usage).unwrap_or_default()
    }
}

/// `Ok`'s usage; an `Err` reports nothing.
impl<T: UsageReport, E> UsageReport for Result<T, E> {
    fn usage(&self) -> TokenUsage<'_> {
        self.as_ref().map(T::usage).unwrap_or_default()
    }
}

/// The sum of every element's usage; the first model seen.
impl<T: UsageReport> UsageReport for [T] {
    fn usage(&self) -> TokenUsage<'_> {
        let mut total = TokenUsage::default();
        for item in self {
            total.merge(item.usage());
        }
        total
    }
}

impl<T: UsageReport> UsageReport for Vec<T> {
    fn usage(&self) -> TokenUsage<'_> {
        self.as_slice().usage()
    }
}

impl UsageReport for TokenUsage<'_> {
    fn usage(&self) -> TokenUsage<'_> {
        TokenUsage {
            model: self.model.as_deref().map(Cow::Borrowed),
            ..*self
        }
    }
}

/// Adds a field's count (derive code only).
#[doc(hidden)]
pub fn add_field_count<T: TokenCount + ?Sized>(
    usage: &mut TokenUsage<'_>,
    kind: CountKind,
    value: &T,
) {
    let total = match kind {
        CountKind::Input => &mut usage.input_tokens,
        CountKind::Output => &mut usage.output_tokens,
        CountKind::CachedInput => &mut usage.cached_input_tokens,
    };
    usage.saturated |= add_count(total, value.token_count());
}

/// Which count a field feeds (derive code only).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum CountKind {
    Input,
    Output,
    CachedInput,
}

/// Sets the model from a field, unless one is set (derive code only).
#[doc(hidden)]
pub fn set_field_model<'a, T: ModelName + ?Sized>(usage: &mut TokenUsage<'a>, value: &'a T) {
    if usage.model.is_none() {
        usage.model = value.model_name().map(Cow::Borrowed);
    }
}

/// A field type usable as a token count in `#[derive(UsageReport)]` or `tokens = ...`: unsigned
/// and signed integers (a negative count is no count) and `Option`s of them.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a token count",
    label = "expected an integer or an `Option` of one"
)]
pub trait TokenCount {
    /// The count, if there is one.
    fn token_count(&self) -> Option<u64>;
}

macro_rules! unsigned_counts {
    ($($ty:ty),*) => {$(
        impl TokenCount for $ty {
            fn token_count(&self) -> Option<u64> {
                u64::try_from(*self).ok().or(Some(u64::MAX))
            }
        }
    )*};
}

macro_rules! signed_counts {
    ($($ty:ty),*) => {$(
        impl TokenCount for $ty {
            fn token_count(&self) -> Option<u64> {
                if *self < 0 {
                    None
                } else {
                    u64::try_from(*self).ok().or(Some(u64::MAX))
                }
            }
        }
    )*};
}

unsigned_counts!(u8, u16, u32, u64, u128, usize);
signed_counts!(i8, i16, i32, i64, i128, isize);

impl<T: TokenCount + ?Sized> TokenCount for &T {
    fn token_count(&self) -> Option<u64> {
        (**self).token_count()
    }
}

impl<T: TokenCount> TokenCount for Option<T> {
    fn token_count(&self) -> Option<u64> {
        self.as_ref().and_then(T::token_count)
    }
}

/// A field type usable as the model in `#[derive(UsageReport)]` or `model = ...`: anything
/// string-like, or an `Option` of it. An empty name is no model.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a model name",
    label = "expected a string or an `Option` of one"
)]
pub trait ModelName {
    /// The model name, if there is one.
    fn model_name(&self) -> Option<&str>;
}

macro_rules! text_models {
    ($($ty:ty),*) => {$(
        impl ModelName for $ty {
            fn model_name(&self) -> Option<&str> {
                let name: &str = self.as_ref();
                (!name.is_empty()).then_some(name)
            }
        }
    )*};
}

text_models!(str, String, Box<str>, Rc<str>, Arc<str>, Cow<'_, str>);

impl<T: ModelName + ?Sized> ModelName for &T {
    fn model_name(&self) -> Option<&str> {
        (**self).model_name()
    }
}

impl<T: ModelName> ModelName for Option<T> {
    fn model_name(&self) -> Option<&str> {
        self.as_ref().and_then(T::model_name)
    }
}

// ---------------------------------------------------------------- in-body recording

/// What the body of the innermost tracked call recorded on this thread or task.
pub(crate) type Tally = TokenUsage<'static>;

/// A call's place for its tally: empty (and free) until the body records something.
pub(crate) type Slot = Option<Box<Tally>>;

thread_local! {
    /// One tally per tracked call running on this thread, innermost last. A sync call keeps its
    /// tally here while it runs; an async call's tally is moved in for each poll and back out.
    static TALLIES: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// Makes a call's tally the innermost one on this thread until dropped (also when unwinding),
/// then puts what was recorded back into the call's slot.
#[derive(Debug)]
pub(crate) struct TallyScope<'a> {
    slot: &'a mut Slot,
}

impl<'a> TallyScope<'a> {
    pub(crate) fn enter(slot: &'a mut Slot) -> Self {
        let tally = slot.take();
        TALLIES.with(|tallies| tallies.borrow_mut().push(tally));
        TallyScope { slot }
    }
}

impl Drop for TallyScope<'_> {
    fn drop(&mut self) {
        *self.slot = pop();
    }
}

fn pop() -> Slot {
    TALLIES.with(|tallies| tallies.borrow_mut().pop().flatten())
}

fn with_innermost(update: impl FnOnce(&mut Tally)) {
    TALLIES.with(|tallies| {
        if let Some(slot) = tallies.borrow_mut().last_mut() {
            update(slot.get_or_insert_with(Box::default));
        }
    });
}

/// Adds input and output tokens to the innermost tracked call running on this thread or task.
/// Outside any tracked call it does nothing.
///
/// ```
/// # use usage_runtime::track_usage;
/// #[track_usage(operation = "summarize")]
/// async fn summarize(text: &str) -> String {
///     // ... call a model whose client does not return a `UsageReport` type ...
///     usage_runtime::record_tokens(1_200, 80);
///     usage_runtime::set_model("claude-3-5-haiku-20241022");
///     "summary".into()
/// }
/// ```
pub fn record_tokens(input: u64, output: u64) {
    with_innermost(|tally| tally.merge(TokenUsage::tokens(input, output)));
}

/// Adds cached input tokens (already counted in `input`, see the module docs) to the innermost
/// tracked call. Outside any tracked call it does nothing.
pub fn record_cached_input_tokens(cached: u64) {
    with_innermost(|tally| {
        tally.saturated |= add_count(&mut tally.cached_input_tokens, Some(cached))
    });
}

/// Sets the model of the innermost tracked call running on this thread or task. Outside any
/// tracked call it does nothing.
pub fn set_model(model: impl Into<String>) {
    let model = model.into();
    with_innermost(|tally| tally.model = Some(crate::call::intern::intern_model(&model)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_and_say_so() {
        let mut total = TokenUsage::tokens(u64::MAX - 1, 1);
        total.merge(TokenUsage::tokens(5, 1));
        assert!(total.saturated);
        assert_eq!(total.input_tokens, Some(u64::MAX));
        assert_eq!(total.output_tokens, Some(2));
        let mut fine = TokenUsage::tokens(1, 1);
        fine.merge(TokenUsage::tokens(1, 1));
        assert!(!fine.saturated);
    }

    #[test]
    fn recording_outside_a_call_does_nothing() {
        record_tokens(1, 2);
        set_model("m");
        TALLIES.with(|tallies| assert!(tallies.borrow().is_empty()));
    }

    #[test]
    fn nested_scopes_record_into_the_innermost() {
        let (mut outer, mut inner): (Slot, Slot) = (None, None);
        {
            let _outer = TallyScope::enter(&mut outer);
            record_tokens(10, 1);
            {
                let _inner = TallyScope::enter(&mut inner);
                record_tokens(5, 5);
                set_model("inner");
            }
            record_tokens(1, 1);
        }
        assert_eq!(
            *inner.unwrap(),
            TokenUsage::tokens(5, 5).with_model("inner")
        );
        assert_eq!(*outer.unwrap(), TokenUsage::tokens(11, 2));
    }

    #[test]
    fn counts_convert() {
        assert_eq!((-1i32).token_count(), None);
        assert_eq!(7u32.token_count(), Some(7));
        assert_eq!(Some(3usize).token_count(), Some(3));
        assert_eq!(u128::MAX.token_count(), Some(u64::MAX));
        assert_eq!("".model_name(), None);
        assert_eq!(Some(String::from("gpt-4o")).model_name(), Some("gpt-4o"));
    }
}

// ---------------------------------------------------------------- generated code's entry points

// `(&&Probe(&value)).__usage_report()`: the value's usage when its type implements `UsageReport`,
// else nothing.

#[doc(hidden)]
pub trait ViaReport<'a> {
    fn __usage_report(&self) -> TokenUsage<'a>;
}

impl<'a, T: UsageReport + ?Sized> ViaReport<'a> for &crate::call::classify::Probe<'a, T> {
    fn __usage_report(&self) -> TokenUsage<'a> {
        self.0.usage()
    }
}

#[doc(hidden)]
pub trait ViaNoReport<'a> {
    fn __usage_report(&self) -> TokenUsage<'a>;
}

impl<'a, T: ?Sized> ViaNoReport<'a> for crate::call::classify::Probe<'a, T> {
    fn __usage_report(&self) -> TokenUsage<'a> {
        TokenUsage::default()
    }
}

// `tokens = f`: `f` takes `&T` where the fn returns `Result<T, E>` (applied to `Ok` only), or the
// whole return value otherwise, and returns `(input, output)`.

#[doc(hidden)]
#[derive(Debug)]
pub struct TokensProbe<'a, T: ?Sized, F>(pub &'a T, pub F);

#[doc(hidden)]
pub trait ViaTokensOk<'a> {
    fn __usage_tokens(&self) -> TokenUsage<'a>;
}

impl<'a, T, E, F, I, O> ViaTokensOk<'a> for &&TokensProbe<'a, Result<T, E>, F>
where
    F: Fn(&T) -> (I, O),
    I: TokenCount,
    O: TokenCount,
{
    fn __usage_tokens(&self) -> TokenUsage<'a> {
        match self.0 {
            Ok(value) => counts((self.1)(value)),
            Err(_) => TokenUsage::default(),
        }
    }
}

#[doc(hidden)]
pub trait ViaTokensAll<'a> {
    fn __usage_tokens(&self) -> TokenUsage<'a>;
}

impl<'a, T: ?Sized, F, I, O> ViaTokensAll<'a> for &TokensProbe<'a, T, F>
where
    F: Fn(&T) -> (I, O),
    I: TokenCount,
    O: TokenCount,
{
    fn __usage_tokens(&self) -> TokenUsage<'a> {
        counts((self.1)(self.0))
    }
}

fn counts<'a>((input, output): (impl TokenCount, impl TokenCount)) -> TokenUsage<'a> {
    TokenUsage {
        input_tokens: input.token_count(),
        output_tokens: output.token_count(),
        ..TokenUsage::default()
    }
}

/// The verdict on a returned value `$value: &T` (generated code only).
#[doc(hidden)]
#[macro_export]
macro_rules! __usage_verdict {
    ($value:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::{ViaClassify as _, ViaDefault as _, ViaResult as _};
        (&&&$crate::__private::Probe($value)).__usage_verdict()
    }};
}

/// The usage a returned value `$value: &T` reports, or what `tokens = $f` reads off it (generated
/// code only).
#[doc(hidden)]
#[macro_export]
macro_rules! __usage_report {
    ($value:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::{ViaNoReport as _, ViaReport as _};
        (&&$crate::__private::Probe($value)).__usage_report()
    }};
    ($value:expr, tokens = $f:expr) => {{
        #[allow(unused_imports)]
        use $crate::__private::{ViaTokensAll as _, ViaTokensOk as _};
        (&&&$crate::__private::TokensProbe($value, $f)).__usage_tokens()
    }};
}
