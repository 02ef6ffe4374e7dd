//! Exact prices and costs: no floats anywhere.
//!
//! Prices are USD per one million tokens, written as decimal strings with at most nine decimal
//! places, and held as integers of 10⁻⁹ USD per million tokens. Counts follow the inclusive rule
//! ([`TokenUsage`]): input includes cache reads, cache writes and audio; output includes
//! reasoning and audio. A record's cost is each part of its tokens times its kind's rate:
//!
//! ```text
//!   cache reads  × cached_input         (else input)
//! + 5-min writes × cache_creation       (else input)
//! + 1-hour writes × cache_creation_1h   (else cache_creation, else input)
//! + audio input  × audio_input          (else input)
//! + the rest of the input × input
//! + reasoning    × reasoning            (else output)
//! + audio output × audio_output         (else output)
//! + the rest of the output × output
//! ```
//!
//! summed exactly in 128-bit integers (units of 10⁻¹⁵ USD), then rounded **once**, half up, to
//! whole nano-USD (10⁻⁹ USD). The parts are taken in that order and each is capped at what is
//! left of its total, so no token is billed twice. A count that is absent counts as zero.
//!
//! **Tiers.** Above a prompt size (input tokens, inclusive) the whole call is priced at the
//! tier's rates, as the providers do (`above_input_tokens = 200000`: a 200,000-token prompt is
//! priced at the base rates, a 200,001-token one at the tier's). A rate a tier does not give is
//! the base rate of that kind.
//!
//! **Dates.** A model may have several entries, each from its `since` date (UTC; an entry without
//! one has always applied): a call is priced by the entry in force when it started, and its
//! record keeps that entry's [`id`](PriceEntry::id). An unknown model, or a call older than its
//! model's first entry, is unpriced (`None`, counted in `Health::unpriced`), never $0.
//!
//! ```toml
//! [models."gpt-4o"]
//! input = "2.50"
//! output = "10.00"
//! cached_input = "1.25"   # optional, as are the other kinds
//!
//! [models."claude-3-5-haiku-*"]   # a trailing * matches by prefix; the longest match wins
//! input = "0.80"
//! output = "4.00"
//! cache_creation = "1.00"
//! cache_creation_1h = "1.60"
//!
//! [[models."gemini-2.5-pro"]]     # an array: entries by date
//! since = "2025-06-17"
//! input = "1.25"
//! output = "10.00"
//! tiers = [{ above_input_tokens = 200000, input = "2.50", output = "15.00" }]
//! ```
//!
//! LiteLLM's `model_prices_and_context_window.json` is read by [`Pricing::from_litellm_json`].

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::call::tokens::TokenUsage;

mod litellm;
mod toml;

/// A price in USD per one million tokens, exact to 10⁻⁹ USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Price {
    nano_usd_per_million: u64,
}

impl Price {
    /// A price from its integer form: 10⁻⁹ USD per million tokens (`Price::from_nano_usd_per_million(2_500_000_000)`
    /// is 2.50 USD per million).
    pub const fn from_nano_usd_per_million(nano_usd_per_million: u64) -> Self {
        Price {
            nano_usd_per_million,
        }
    }

    /// The integer form: 10⁻⁹ USD per million tokens.
    pub const fn nano_usd_per_million(self) -> u64 {
        self.nano_usd_per_million
    }
}

/// The text is not a non-negative decimal with at most nine decimal places.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a price: {reason}")]
pub struct ParsePriceError {
    text: String,
    reason: &'static str,
}

impl FromStr for Price {
    type Err = ParsePriceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ParsePriceError {
            text: text.to_owned(),
            reason,
        };
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(fail("expected a non-negative decimal such as \"2.50\""));
        }
        if !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return Err(fail(
                "expected a non-negative decimal such as \"2.50\" (digits and one point only)",
            ));
        }
        if fraction.len() > 9 {
            return Err(fail(
                "more than nine decimal places (prices are exact to 10⁻⁹ USD)",
            ));
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| fail("too large"))?
        };
        let fraction: u64 = format!("{fraction:0<9}")
            .parse()
            .map_err(|_| fail("too large"))?;
        whole
            .checked_mul(1_000_000_000)
            .and_then(|nanos| nanos.checked_add(fraction))
            .map(Price::from_nano_usd_per_million)
            .ok_or_else(|| fail("too large"))
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.nano_usd_per_million / 1_000_000_000;
        let fraction = self.nano_usd_per_million % 1_000_000_000;
        let fraction = format!("{fraction:09}");
        let fraction = fraction.trim_end_matches('0');
        write!(f, "{whole}.{fraction:0<2}")
    }
}

/// The rates of one price entry (or of one of its tiers), per token kind: the input side, then
/// the output side. A kind without its own rate is billed at the rate the [module docs](self)
/// name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ModelPrice {
    /// Per million input tokens.
    pub input: Price,
    /// Per million input tokens read from a prompt cache.
    pub cached_input: Option<Price>,
    /// Per million input tokens written to a 5-minute prompt cache.
    pub cache_creation: Option<Price>,
    /// Per million input tokens written to a 1-hour prompt cache.
    pub cache_creation_1h: Option<Price>,
    /// Per million audio input tokens.
    pub audio_input: Option<Price>,
    /// Per million output tokens.
    pub output: Price,
    /// Per million reasoning tokens.
    pub reasoning: Option<Price>,
    /// Per million audio output tokens.
    pub audio_output: Option<Price>,
}

/// The rate names, as the TOML format and errors spell them, in [`ModelPrice`]'s field order.
pub(crate) const RATES: [&str; 8] = [
    "input",
    "output",
    "cached_input",
    "cache_creation",
    "cache_creation_1h",
    "reasoning",
    "audio_input",
    "audio_output",
];

impl ModelPrice {
    /// Input and output prices, USD per million tokens, as decimal strings.
    pub fn new(input: &str, output: &str) -> Result<Self, PricingError> {
        Ok(ModelPrice {
            input: parse_field(None, None, "input", input)?,
            output: parse_field(None, None, "output", output)?,
            ..ModelPrice::default()
        })
    }

    /// Sets the cached-input (cache-read) price.
    pub fn with_cached_input(self, price: &str) -> Result<Self, PricingError> {
        self.with_rate("cached_input", price)
    }

    /// Sets the rate `name` (one of `input`, `output`, `cached_input`, `cache_creation`,
    /// `cache_creation_1h`, `reasoning`, `audio_input`, `audio_output`).
    pub fn with_rate(mut self, name: &str, price: &str) -> Result<Self, PricingError> {
        let price = parse_field(None, None, name, price)?;
        self.set(name, price).map_err(|reason| PricingError {
            file: None,
            model: None,
            field: Some(name.to_owned()),
            reason,
        })?;
        Ok(self)
    }

    /// Sets the rate `name`; an unknown name is an error's reason.
    pub(crate) fn set(&mut self, name: &str, price: Price) -> Result<(), String> {
        match name {
            "input" => self.input = price,
            "output" => self.output = price,
            "cached_input" => self.cached_input = Some(price),
            "cache_creation" => self.cache_creation = Some(price),
            "cache_creation_1h" => self.cache_creation_1h = Some(price),
            "reasoning" => self.reasoning = Some(price),
            "audio_input" => self.audio_input = Some(price),
            "audio_output" => self.audio_output = Some(price),
            _ => {
                return Err(format!(
                    "unknown rate; expected one of {}",
                    RATES.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// The rates in [`RATES`] order, `None` where a kind has none of its own.
    fn rates(&self) -> [Option<Price>; 8] {
        [
            Some(self.input),
            Some(self.output),
            self.cached_input,
            self.cache_creation,
            self.cache_creation_1h,
            self.reasoning,
            self.audio_input,
            self.audio_output,
        ]
    }

    /// These rates with every one this tier does not give taken from `base`.
    fn or(self, base: &ModelPrice) -> ModelPrice {
        ModelPrice {
            cached_input: self.cached_input.or(base.cached_input),
            cache_creation: self.cache_creation.or(base.cache_creation),
            cache_creation_1h: self.cache_creation_1h.or(base.cache_creation_1h),
            reasoning: self.reasoning.or(base.reasoning),
            audio_input: self.audio_input.or(base.audio_input),
            audio_output: self.audio_output.or(base.audio_output),
            ..self
        }
    }

    /// The exact cost of `usage` at these rates (no tier), in nano-USD, rounded once, half up.
    /// `None` when `usage` has no token count at all.
    pub fn cost_nano_usd(&self, usage: &TokenUsage<'_>) -> Option<i64> {
        if !usage.has_counts() {
            return None;
        }
        let count = |n: Option<u64>| u128::from(n.unwrap_or(0));
        let rate = |price: Price| u128::from(price.nano_usd_per_million);
        // Each part capped at what is left of its total, in the module docs' order.
        let mut input_left = count(usage.input_tokens);
        let take = |n: Option<u64>, left: &mut u128| {
            let part = count(n).min(*left);
            *left -= part;
            part
        };
        let cached = take(usage.cached_input_tokens, &mut input_left);
        let mut written = take(usage.cache_creation_input_tokens, &mut input_left);
        let written_1h = take(usage.cache_creation_1h_input_tokens, &mut written);
        let audio_in = take(usage.audio_input_tokens, &mut input_left);
        let mut output_left = count(usage.output_tokens);
        let reasoning = take(usage.reasoning_tokens, &mut output_left);
        let audio_out = take(usage.audio_output_tokens, &mut output_left);
        let creation = self.cache_creation.unwrap_or(self.input);
        // Units of 10⁻¹⁵ USD: tokens × 10⁻⁹ USD per million tokens. Each product fits in 128
        // bits; only a sum of several near `u64::MAX` could not, and that saturates.
        let parts = [
            (cached, self.cached_input.unwrap_or(self.input)),
            (written, creation),
            (written_1h, self.cache_creation_1h.unwrap_or(creation)),
            (audio_in, self.audio_input.unwrap_or(self.input)),
            (input_left, self.input),
            (reasoning, self.reasoning.unwrap_or(self.output)),
            (audio_out, self.audio_output.unwrap_or(self.output)),
            (output_left, self.output),
        ];
        let femto = parts.iter().fold(0u128, |sum, &(tokens, price)| {
            sum.saturating_add(tokens.saturating_mul(rate(price)))
        });
        let nano = femto.saturating_add(500_000) / 1_000_000;
        Some(i64::try_from(nano).unwrap_or(i64::MAX))
    }
}

/// Rates for calls whose prompt is larger than a threshold: the whole call is priced at them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceTier {
    /// The tier applies to calls with more input tokens than this (inclusive input).
    pub above_input_tokens: u64,
    /// The tier's rates. `input` and `output` are always its own (build a tier from its base,
    /// `ModelPrice { input, output, ..base }`, to change only some); an optional rate it
    /// leaves `None` is the base's. The TOML and LiteLLM readers start each tier from its base.
    pub price: ModelPrice,
}

/// One price entry of a model: its rates, tiers, and the date from which it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceEntry {
    since: Option<DateTime<Utc>>,
    price: ModelPrice,
    /// By threshold, ascending; each with the base's rates filled in.
    tiers: Vec<PriceTier>,
    id: String,
}

impl PriceEntry {
    /// An entry of `pattern` in force from `since` (`None`: always), with tiers in any order.
    fn new(
        pattern: &str,
        since: Option<DateTime<Utc>>,
        price: ModelPrice,
        mut tiers: Vec<PriceTier>,
    ) -> Self {
        for tier in &mut tiers {
            tier.price = tier.price.or(&price);
        }
        tiers.sort_by_key(|tier| tier.above_input_tokens);
        let id = entry_id(pattern, since, &price, &tiers);
        PriceEntry {
            since,
            price,
            tiers,
            id,
        }
    }

    /// When the entry starts to apply; `None` when it always has.
    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.since
    }

    /// The base rates.
    pub fn price(&self) -> &ModelPrice {
        &self.price
    }

    /// The tiers, by threshold.
    pub fn tiers(&self) -> &[PriceTier] {
        &self.tiers
    }

    /// What a record priced by this entry keeps as `price_id`: the model pattern, the start date
    /// (`-` for none) and the first 8 hex digits of a hash of every rate and tier, such as
    /// `gpt-4o@2024-10-01#1f0c9a2e`. Any change of a rate changes it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The rates a call of `input` tokens is priced at.
    fn rates_for(&self, input: u64) -> &ModelPrice {
        self.tiers
            .iter()
            .rev()
            .find(|tier| input > tier.above_input_tokens)
            .map_or(&self.price, |tier| &tier.price)
    }
}

/// A stable text of the entry's rates, hashed (UUIDv5's SHA-1) into the id.
fn entry_id(
    pattern: &str,
    since: Option<DateTime<Utc>>,
    price: &ModelPrice,
    tiers: &[PriceTier],
) -> String {
    let rates = |price: &ModelPrice| {
        price
            .rates()
            .iter()
            .map(|rate| rate.map_or("-".to_owned(), |p| p.nano_usd_per_million.to_string()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut text = rates(price);
    for tier in tiers {
        text += &format!(";>{}:{}", tier.above_input_tokens, rates(&tier.price));
    }
    let hash = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes());
    let since = since.map_or("-".to_owned(), |at| {
        if at == at.date_naive().and_time(chrono::NaiveTime::MIN).and_utc() {
            at.format("%Y-%m-%d").to_string()
        } else {
            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        }
    });
    format!("{pattern}@{since}#{}", &hash.simple().to_string()[..8])
}

/// The cost of one call and the entry that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost<'a> {
    /// Nano-USD, rounded once, half up.
    pub nano_usd: i64,
    /// [`PriceEntry::id`].
    pub price_id: &'a str,
}

/// Prices per model, for [`TrackerBuilder::pricing`](crate::TrackerBuilder::pricing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pricing {
    exact: HashMap<String, Vec<PriceEntry>>,
    /// `(prefix, entries)` for patterns ending in `*`, longest prefix first.
    prefixes: Vec<(String, Vec<PriceEntry>)>,
}

impl Pricing {
    /// No prices.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the price of `pattern` (a model name, or a prefix ending in `*`), always in force,
    /// replacing any entries it had.
    pub fn model(mut self, pattern: &str, price: ModelPrice) -> Result<Self, PricingError> {
        self.insert(pattern, vec![(None, price, Vec::new())], None)?;
        Ok(self)
    }

    /// Adds an entry of `pattern` in force from `since`, with `tiers`, beside its others (one
    /// with the same start is replaced).
    pub fn model_since(
        mut self,
        pattern: &str,
        since: Option<DateTime<Utc>>,
        price: ModelPrice,
        tiers: Vec<PriceTier>,
    ) -> Result<Self, PricingError> {
        let mut entries: Vec<_> = self
            .entries_of_pattern(pattern)
            .iter()
            .filter(|entry| entry.since != since)
            .map(|entry| (entry.since, entry.price, entry.tiers.clone()))
            .collect();
        entries.push((since, price, tiers));
        self.insert(pattern, entries, None)?;
        Ok(self)
    }

    fn entries_of_pattern(&self, pattern: &str) -> &[PriceEntry] {
        match pattern.strip_suffix('*') {
            Some(prefix) => self
                .prefixes
                .iter()
                .find(|(p, _)| p == prefix)
                .map_or(&[][..], |(_, entries)| entries),
            None => self.exact.get(pattern).map_or(&[][..], Vec::as_slice),
        }
    }

    /// Sets the entries of `pattern`.
    pub(crate) fn insert(
        &mut self,
        pattern: &str,
        entries: Vec<(Option<DateTime<Utc>>, ModelPrice, Vec<PriceTier>)>,
        file: Option<&Path>,
    ) -> Result<(), PricingError> {
        let error = |reason: String| PricingError {
            file: file.map(Path::to_path_buf),
            model: Some(pattern.to_owned()),
            field: None,
            reason,
        };
        let (name, is_prefix) = match pattern.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (pattern, false),
        };
        if name.contains('*') {
            return Err(error("`*` may only end a model pattern".into()));
        }
        if name.is_empty() && !is_prefix {
            return Err(error("the model name is empty".into()));
        }
        let mut entries: Vec<PriceEntry> = entries
            .into_iter()
            .map(|(since, price, tiers)| PriceEntry::new(pattern, since, price, tiers))
            .collect();
        entries.sort_by_key(|entry| entry.since);
        if entries.is_empty() {
            return Err(error("no price entry".into()));
        }
        if let Some(pair) = entries
            .windows(2)
            .find(|pair| pair[0].since == pair[1].since)
        {
            let since = pair[0]
                .since
                .map_or("always".to_owned(), |at| at.to_rfc3339());
            return Err(error(format!(
                "two entries start at the same time ({since})"
            )));
        }
        for entry in &entries {
            if let Some(pair) = entry
                .tiers
                .windows(2)
                .find(|pair| pair[0].above_input_tokens == pair[1].above_input_tokens)
            {
                return Err(error(format!(
                    "two tiers start above {} input tokens",
                    pair[0].above_input_tokens
                )));
            }
        }
        if is_prefix {
            self.prefixes.retain(|(prefix, _)| prefix != name);
            self.prefixes.push((name.to_owned(), entries));
            self.prefixes
                .sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        } else {
            self.exact.insert(name.to_owned(), entries);
        }
        Ok(())
    }

    /// The entries of `model`, oldest first: an exact entry's, else the longest matching
    /// prefix's.
    pub fn entries(&self, model: &str) -> &[PriceEntry] {
        self.exact.get(model).map_or_else(
            || {
                self.prefixes
                    .iter()
                    .find(|(prefix, _)| model.starts_with(prefix.as_str()))
                    .map_or(&[][..], |(_, entries)| entries)
            },
            Vec::as_slice,
        )
    }

    /// The entry of `model` in force at `at`.
    pub fn entry_at(&self, model: &str, at: DateTime<Utc>) -> Option<&PriceEntry> {
        self.entries(model)
            .iter()
            .rev()
            .find(|entry| entry.since.is_none_or(|since| since <= at))
    }

    /// The base rates of `model` in force now.
    pub fn price_of(&self, model: &str) -> Option<&ModelPrice> {
        self.entry_at(model, Utc::now()).map(PriceEntry::price)
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// The cost of a call that started at `at` with `usage`: `None` without a model, an entry
    /// in force for it, or any token count.
    pub fn cost(&self, usage: &TokenUsage<'_>, at: DateTime<Utc>) -> Option<Cost<'_>> {
        let entry = self.entry_at(usage.model.as_deref()?, at)?;
        let rates = entry.rates_for(usage.input_tokens.unwrap_or(0));
        Some(Cost {
            nano_usd: rates.cost_nano_usd(usage)?,
            price_id: &entry.id,
        })
    }

    /// The cost of `usage` at the prices in force now (see [`Pricing::cost`]).
    pub fn cost_nano_usd(&self, usage: &TokenUsage<'_>) -> Option<i64> {
        self.cost(usage, Utc::now()).map(|cost| cost.nano_usd)
    }

    /// Reads and parses a pricing file: LiteLLM's JSON when it ends in `.json`, else TOML.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PricingError> {
        let path = path.as_ref();
        let text = read_config(path)
            .map_err(|reason| PricingError::new(Some(path), None, None, reason))?;
        if path.extension().is_some_and(|ext| ext == "json") {
            litellm::parse(&text, Some(path))
        } else {
            toml::parse(&text, Some(path))
        }
    }

    /// Parses the TOML format in the [module docs](self).
    pub fn from_toml(text: &str) -> Result<Self, PricingError> {
        toml::parse(text, None)
    }

    /// Parses LiteLLM's `model_prices_and_context_window.json`. Its per-token prices are JSON
    /// numbers; each is taken as the shortest decimal that reads back as the same double (the
    /// text the file wrote, for any price of up to 17 significant digits), moved six places to
    /// a price per million, and rounded once, half up, to 10⁻⁹ USD per million. Entries
    /// without a per-token input or output price (images, seconds) are left out, so their models
    /// stay unpriced; the service tiers (`_batches`, `_flex`, `_priority`) and other keys are
    /// not read.
    pub fn from_litellm_json(text: &str) -> Result<Self, PricingError> {
        litellm::parse(text, None)
    }
}

fn parse_field(
    file: Option<&Path>,
    model: Option<&str>,
    field: &str,
    text: &str,
) -> Result<Price, PricingError> {
    text.trim()
        .parse()
        .map_err(|error: ParsePriceError| PricingError {
            file: file.map(Path::to_path_buf),
            model: model.map(str::to_owned),
            field: Some(field.to_owned()),
            reason: error.to_string(),
        })
}

/// A pricing table could not be read: names the file, the model and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingError {
    file: Option<PathBuf>,
    model: Option<String>,
    field: Option<String>,
    reason: String,
}

impl PricingError {
    pub(crate) fn new(
        file: Option<&Path>,
        model: Option<&str>,
        field: Option<&str>,
        reason: String,
    ) -> Self {
        PricingError {
            file: file.map(Path::to_path_buf),
            model: model.map(str::to_owned),
            field: field.map(str::to_owned),
            reason,
        }
    }

    /// The pricing file, when read from one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The model entry at fault, if one is.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The field at fault, if one is.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl fmt::Display for PricingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = [("model", &self.model), ("field", &self.field)];
        describe_file_error(f, "pricing", self.file.as_deref(), place)?;
        write!(f, ": {}", self.reason)
    }
}

/// A configuration file's text, or why it cannot be read.
pub(crate) fn read_config(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|error| format!("cannot read it: {error}"))
}

/// `invalid <what> in <file>, <name> `<value>`, ...`: where a configuration file is at fault.
pub(crate) fn describe_file_error(
    f: &mut fmt::Formatter<'_>,
    what: &str,
    file: Option<&Path>,
    place: [(&str, &Option<String>); 2],
) -> fmt::Result {
    write!(f, "invalid {what}")?;
    if let Some(file) = file {
        write!(f, " in {}", file.display())?;
    }
    for (name, value) in place {
        if let Some(value) = value {
            write!(f, ", {name} `{value}`")?;
        }
    }
    Ok(())
}

impl std::error::Error for PricingError {}

#[cfg(test)]
mod tests;
