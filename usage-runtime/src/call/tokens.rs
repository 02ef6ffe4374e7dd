//! LLM token counts and the model: read off a handler's result ([`UsageReport`]), from the
//! attribute (`tokens = ...`, `model = ...`), or recorded inside the body ([`record_tokens`],
//! [`set_model`]).
//!
//! Counts follow the OpenTelemetry GenAI conventions' inclusive rule: `input_tokens` is every
//! input token, *including* those read from or written to a prompt cache and audio ones, and
//! `output_tokens` every output token, *including* reasoning and audio ones; the other counts
//! say how many of those were of a kind. For a provider that reports cache reads or writes
//! apart from input (Anthropic's `cache_read_input_tokens` and `cache_creation_input_tokens`),
//! mark each such field as `input_tokens` too: fields of the same kind are added.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// Token counts and model of one call, as a [`UsageReport`] gives them. Every count is `None`
/// when the call did not report it (never a made-up zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenUsage<'a> {
    /// Input (prompt) tokens: all of them, cache reads and writes and audio included.
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens: all of them, reasoning and audio included.
    pub output_tokens: Option<u64>,
    /// How many of the input tokens were read from a prompt cache (OpenAI's `cached_tokens`,
    /// Anthropic's `cache_read_input_tokens`).
    pub cached_input_tokens: Option<u64>,
    /// How many of the input tokens were written to a prompt cache, every cache lifetime
    /// together (Anthropic's `cache_creation_input_tokens`).
    pub cache_creation_input_tokens: Option<u64>,
    /// How many of the cache-creation tokens were written to the 1-hour cache (Anthropic's
    /// `ephemeral_1h_input_tokens`); the rest went to the 5-minute cache.
    pub cache_creation_1h_input_tokens: Option<u64>,
    /// How many of the output tokens were reasoning (OpenAI's `reasoning_tokens`, Gemini's
    /// `thoughtsTokenCount` added to output).
    pub reasoning_tokens: Option<u64>,
    /// How many of the input tokens were audio.
    pub audio_input_tokens: Option<u64>,
    /// How many of the output tokens were audio.
    pub audio_output_tokens: Option<u64>,
    /// The model that served the call.
    pub model: Option<Cow<'a, str>>,
    /// Whether a count overflowed while being added up and was held at `u64::MAX`.
    pub saturated: bool,
}

/// A kind of token count, in the order of [`TokenUsage`]'s fields (and of every column list
/// that stores them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenKind {
    /// [`TokenUsage::input_tokens`].
    Input,
    /// [`TokenUsage::output_tokens`].
    Output,
    /// [`TokenUsage::cached_input_tokens`].
    CachedInput,
    /// [`TokenUsage::cache_creation_input_tokens`].
    CacheCreation,
    /// [`TokenUsage::cache_creation_1h_input_tokens`].
    CacheCreation1h,
    /// [`TokenUsage::reasoning_tokens`].
    Reasoning,
    /// [`TokenUsage::audio_input_tokens`].
    AudioInput,
    /// [`TokenUsage::audio_output_tokens`].
    AudioOutput,
}

impl TokenKind {
    /// Every kind, in field order.
    pub const ALL: [TokenKind; 8] = [
        TokenKind::Input,
        TokenKind::Output,
        TokenKind::CachedInput,
        TokenKind::CacheCreation,
        TokenKind::CacheCreation1h,
        TokenKind::Reasoning,
        TokenKind::AudioInput,
        TokenKind::AudioOutput,
    ];

    /// The field's (and the column's) name: `input_tokens`, `cache_creation_input_tokens`, ...
    pub const fn name(self) -> &'static str {
        match self {
            TokenKind::Input => "input_tokens",
            TokenKind::Output => "output_tokens",
            TokenKind::CachedInput => "cached_input_tokens",
            TokenKind::CacheCreation => "cache_creation_input_tokens",
            TokenKind::CacheCreation1h => "cache_creation_1h_input_tokens",
            TokenKind::Reasoning => "reasoning_tokens",
            TokenKind::AudioInput => "audio_input_tokens",
            TokenKind::AudioOutput => "audio_output_tokens",
        }
    }
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

    /// With these counts, in [`TokenKind::ALL`] order, and `model`.
    pub(crate) fn from_counts(counts: [Option<u64>; 8], model: Option<&'a str>) -> Self {
        let mut usage = TokenUsage {
            model: model.map(Cow::Borrowed),
            ..TokenUsage::default()
        };
        for (kind, count) in TokenKind::ALL.into_iter().zip(counts) {
            *usage.count_mut(kind) = count;
        }
        usage
    }

    /// The count of `kind`.
    pub fn count(&self, kind: TokenKind) -> Option<u64> {
        self.counts()[kind as usize]
    }

    /// Every count, in [`TokenKind::ALL`] order.
    pub fn counts(&self) -> [Option<u64>; 8] {
        token_fields!(counts_of, self)
    }

    fn count_mut(&mut self, kind: TokenKind) -> &mut Option<u64> {
        match kind {
            TokenKind::Input => &mut self.input_tokens,
            TokenKind::Output => &mut self.output_tokens,
            TokenKind::CachedInput => &mut self.cached_input_tokens,
            TokenKind::CacheCreation => &mut self.cache_creation_input_tokens,
            TokenKind::CacheCreation1h => &mut self.cache_creation_1h_input_tokens,
            TokenKind::Reasoning => &mut self.reasoning_tokens,
            TokenKind::AudioInput => &mut self.audio_input_tokens,
            TokenKind::AudioOutput => &mut self.audio_output_tokens,
        }
    }

    /// Sets the count of `kind`.
    pub fn with(mut self, kind: TokenKind, count: u64) -> Self {
        *self.count_mut(kind) = Some(count);
        self
    }

    /// Adds `count` to the count of `kind`, saturating at `u64::MAX` (and setting `saturated`).
    pub fn add(&mut self, kind: TokenKind, count: u64) {
        self.saturated |= add_count(self.count_mut(kind), Some(count));
    }

    /// Sets the cached-input (cache-read) count.
    pub fn with_cached_input_tokens(self, cached: u64) -> Self {
        self.with(TokenKind::CachedInput, cached)
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
        for (kind, count) in TokenKind::ALL.into_iter().zip(other.counts()) {
            self.saturated |= add_count(self.count_mut(kind), count);
        }
        if self.model.is_none() {
            self.model = other.model;
        }
    }

    /// Whether there is any count.
    pub fn has_counts(&self) -> bool {
        self.counts().iter().any(Option::is_some)
    }

    /// Whether there is anything in it.
    pub fn is_empty(&self) -> bool {
        !self.has_counts() && self.model.is_none()
    }

    pub(crate) fn into_owned(self) -> TokenUsage<'static> {
        TokenUsage {
            // Interned: a model repeats on every call, so the hot path does not copy it.
            model: self.model.as_deref().map(crate::call::intern::intern_model),
            ..self.without_model()
        }
    }

    /// The counts, without the model.
    fn without_model<'b>(&self) -> TokenUsage<'b> {
        let mut counts = TokenUsage {
            saturated: self.saturated,
            ..TokenUsage::default()
        };
        token_fields!(copy_counts, counts, self);
        counts
    }
}

/// The token count fields of [`TokenUsage`] and [`UsageRecord`](crate::UsageRecord), in
/// [`TokenKind::ALL`] order, handed to `$then` with `$arg`s: the one list both types' counts
/// are read and copied by.
macro_rules! token_fields {
    ($then:ident, $($arg:expr),*) => {
        $crate::call::tokens::$then!([$($arg),*] input_tokens output_tokens cached_input_tokens
            cache_creation_input_tokens cache_creation_1h_input_tokens reasoning_tokens
            audio_input_tokens audio_output_tokens)
    };
}

/// `[of.field, ...]`.
macro_rules! counts_of {
    ([$of:expr] $($field:ident)*) => { [$($of.$field),*] };
}

/// `to.field = from.field;` for each field.
macro_rules! copy_counts {
    ([$to:expr, $from:expr] $($field:ident)*) => { $($to.$field = $from.$field;)* };
}

pub(crate) use {copy_counts, counts_of, token_fields};

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
            ..self.without_model()
        }
    }
}

/// Adds a field's count (derive code only).
#[doc(hidden)]
pub fn add_field_count<T: TokenCount + ?Sized>(
    usage: &mut TokenUsage<'_>,
    kind: TokenKind,
    value: &T,
) {
    usage.saturated |= add_count(usage.count_mut(kind), value.token_count());
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

/// Boxes of tallies the worker has read, handed back to the hot path, so a call that reports
/// usage takes one instead of allocating and the worker frees none per call. A box freed on
/// another thread than the one that allocated it costs both threads the allocator's lock
/// (glibc's arena): measured, most of the LLM path's time.
static SPARE_TALLIES: std::sync::LazyLock<crossbeam_queue::ArrayQueue<Box<Tally>>> =
    std::sync::LazyLock::new(|| crossbeam_queue::ArrayQueue::new(SPARE_TALLIES_KEPT));

/// The most spare boxes kept: as many as a quarter of the default queue holds, about 2.6 MB at
/// most, reached only after that many calls reporting usage waited at once.
const SPARE_TALLIES_KEPT: usize = 16_384;

/// An empty tally: a spare box when there is one.
pub(crate) fn spare_tally() -> Box<Tally> {
    SPARE_TALLIES.pop().unwrap_or_default()
}

/// What `tally` holds; its box, emptied, kept for [`spare_tally`] (or freed when enough are).
pub(crate) fn recycle(mut tally: Box<Tally>) -> Tally {
    let taken = std::mem::take(&mut *tally);
    let _ = SPARE_TALLIES.push(tally);
    taken
}

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
            update(slot.get_or_insert_with(spare_tally));
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
    record_token_count(TokenKind::CachedInput, cached);
}

/// Adds `usage`'s counts to the innermost tracked call, and its model when the call has none
/// yet: what a provider's response reported, read by a [`providers`](crate::providers) mapper
/// or by hand. Outside any tracked call it does nothing.
pub fn record_usage(usage: TokenUsage<'_>) {
    let usage = usage.into_owned();
    with_innermost(|tally| tally.merge(usage));
}

/// Adds `count` tokens of `kind` to the innermost tracked call (a count of a kind within input
/// or output, such as [`TokenKind::Reasoning`], is already counted there: see the module docs).
/// Outside any tracked call it does nothing.
pub fn record_token_count(kind: TokenKind, count: u64) {
    with_innermost(|tally| tally.add(kind, count));
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
    fn a_recycled_box_comes_back_empty() {
        let mut tally = spare_tally();
        tally.merge(TokenUsage::tokens(3, 4).with_model("m"));
        assert_eq!(recycle(tally), TokenUsage::tokens(3, 4).with_model("m"));
        // Whichever spare comes next (other tests run at once), it holds nothing.
        for _ in 0..4 {
            assert!(spare_tally().is_empty());
        }
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
