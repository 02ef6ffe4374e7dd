//! Exact prices and costs: no floats anywhere.
//!
//! Prices are USD per one million tokens, written as decimal strings with at most nine decimal
//! places, and held as integers of 10⁻⁹ USD per million tokens. A record's cost is
//!
//! ```text
//! (input − cached) × input_price + cached × cached_input_price + output × output_price
//! ```
//!
//! summed exactly in 128-bit integers (units of 10⁻¹⁵ USD), then rounded **once**, half up, to
//! whole nano-USD (10⁻⁹ USD). Cached tokens are billed at `cached_input` when the model has that
//! price, else at `input`; `cached` is capped at `input`. A count that is absent counts as zero.
//!
//! ```toml
//! [models."gpt-4o"]
//! input = "2.50"
//! output = "10.00"
//! cached_input = "1.25"   # optional
//!
//! [models."claude-3-5-haiku-*"]   # a trailing * matches by prefix; the longest match wins
//! input = "0.80"
//! output = "4.00"
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::call::tokens::TokenUsage;

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

/// The prices of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelPrice {
    /// Per million input tokens.
    pub input: Price,
    /// Per million output tokens.
    pub output: Price,
    /// Per million cached input tokens; `None` bills them at `input`.
    pub cached_input: Option<Price>,
}

impl ModelPrice {
    /// Input and output prices, USD per million tokens, as decimal strings.
    pub fn new(input: &str, output: &str) -> Result<Self, PricingError> {
        Ok(ModelPrice {
            input: parse_field(None, None, "input", input)?,
            output: parse_field(None, None, "output", output)?,
            cached_input: None,
        })
    }

    /// Sets the cached-input price.
    pub fn with_cached_input(mut self, cached_input: &str) -> Result<Self, PricingError> {
        self.cached_input = Some(parse_field(None, None, "cached_input", cached_input)?);
        Ok(self)
    }

    /// The exact cost of `usage`, in nano-USD, rounded once, half up. `None` when `usage` has no
    /// token count at all.
    pub fn cost_nano_usd(&self, usage: &TokenUsage<'_>) -> Option<i64> {
        if usage.input_tokens.is_none()
            && usage.output_tokens.is_none()
            && usage.cached_input_tokens.is_none()
        {
            return None;
        }
        let input = u128::from(usage.input_tokens.unwrap_or(0));
        let cached = u128::from(usage.cached_input_tokens.unwrap_or(0)).min(input);
        let output = u128::from(usage.output_tokens.unwrap_or(0));
        let cached_price = self.cached_input.unwrap_or(self.input);
        // Units of 10⁻¹⁵ USD: tokens × 10⁻⁹ USD per million tokens. Fits easily: u64 × u64 < 2¹²⁸.
        let femto = (input - cached) * u128::from(self.input.nano_usd_per_million)
            + cached * u128::from(cached_price.nano_usd_per_million)
            + output * u128::from(self.output.nano_usd_per_million);
        let nano = (femto + 500_000) / 1_000_000;
        Some(i64::try_from(nano).unwrap_or(i64::MAX))
    }
}

/// Prices per model, for [`TrackerBuilder::pricing`](crate::TrackerBuilder::pricing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pricing {
    exact: HashMap<String, ModelPrice>,
    /// `(prefix, price)` for patterns ending in `*`, longest prefix first.
    prefixes: Vec<(String, ModelPrice)>,
}

impl Pricing {
    /// No prices.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the price of `pattern`: a model name, or a prefix ending in `*`.
    pub fn model(mut self, pattern: &str, price: ModelPrice) -> Result<Self, PricingError> {
        self.insert(pattern, price, None)?;
        Ok(self)
    }

    fn insert(
        &mut self,
        pattern: &str,
        price: ModelPrice,
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
        if is_prefix {
            self.prefixes.retain(|(prefix, _)| prefix != name);
            self.prefixes.push((name.to_owned(), price));
            self.prefixes
                .sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        } else {
            self.exact.insert(name.to_owned(), price);
        }
        Ok(())
    }

    /// The price of `model`: an exact entry, else the longest matching prefix.
    pub fn price_of(&self, model: &str) -> Option<&ModelPrice> {
        self.exact.get(model).or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| model.starts_with(prefix.as_str()))
                .map(|(_, price)| price)
        })
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Parses the TOML format in the [module docs](self).
    pub fn from_toml(text: &str) -> Result<Self, PricingError> {
        Self::parse(text, None)
    }

    /// Reads and parses a TOML pricing file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PricingError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| PricingError {
            file: Some(path.to_path_buf()),
            model: None,
            field: None,
            reason: format!("cannot read it: {error}"),
        })?;
        Self::parse(&text, Some(path))
    }

    fn parse(text: &str, file: Option<&Path>) -> Result<Self, PricingError> {
        let error = |model: Option<&str>, field: Option<&str>, reason: String| PricingError {
            file: file.map(Path::to_path_buf),
            model: model.map(str::to_owned),
            field: field.map(str::to_owned),
            reason,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| error(None, None, format!("not valid TOML: {e}")))?;
        let mut pricing = Pricing::new();
        for (key, value) in &table {
            if key != "models" {
                return Err(error(
                    None,
                    Some(key),
                    "unknown top-level key; prices go in [models.\"<name>\"] tables".into(),
                ));
            }
            let models = value
                .as_table()
                .ok_or_else(|| error(None, Some("models"), "expected a table of models".into()))?;
            for (model, entry) in models {
                let entry = entry.as_table().ok_or_else(|| {
                    error(
                        Some(model),
                        None,
                        "expected a table with `input` and `output`".into(),
                    )
                })?;
                let price = |field: &str, required: bool| -> Result<Option<Price>, PricingError> {
                    match entry.get(field) {
                        None if required => Err(error(
                            Some(model),
                            Some(field),
                            "missing; every model needs `input` and `output`".into(),
                        )),
                        None => Ok(None),
                        Some(toml::Value::String(text)) => {
                            parse_field(file, Some(model), field, text).map(Some)
                        }
                        Some(toml::Value::Integer(n)) if *n >= 0 => {
                            parse_field(file, Some(model), field, &n.to_string()).map(Some)
                        }
                        Some(toml::Value::Float(f)) => Err(error(
                            Some(model),
                            Some(field),
                            format!(
                                "write prices as strings so they stay exact, e.g. {field} = \"{f}\""
                            ),
                        )),
                        Some(other) => Err(error(
                            Some(model),
                            Some(field),
                            format!("`{other}` is not a non-negative decimal string"),
                        )),
                    }
                };
                for field in entry.keys() {
                    if !["input", "output", "cached_input"].contains(&field.as_str()) {
                        return Err(error(
                            Some(model),
                            Some(field),
                            "unknown field; expected input, output or cached_input".into(),
                        ));
                    }
                }
                let model_price = ModelPrice {
                    input: price("input", true)?.unwrap_or_default(),
                    output: price("output", true)?.unwrap_or_default(),
                    cached_input: price("cached_input", false)?,
                };
                pricing.insert(model, model_price, file)?;
            }
        }
        Ok(pricing)
    }

    /// The cost of `usage`: `None` without a model, a price for it, or any token count.
    pub fn cost_nano_usd(&self, usage: &TokenUsage<'_>) -> Option<i64> {
        let model = usage.model.as_deref()?;
        self.price_of(model)?.cost_nano_usd(usage)
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
        f.write_str("invalid pricing")?;
        if let Some(file) = &self.file {
            write!(f, " in {}", file.display())?;
        }
        if let Some(model) = &self.model {
            write!(f, ", model `{model}`")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for PricingError {}

#[cfg(test)]
mod tests {
    use super::*;

    // Inline tables, as a table may also be written.
    const TABLE: &str = r#"
[models]
"gpt-4o" = { input = "2.50", output = "10.00", cached_input = "1.25" }
"claude-3-5-haiku-*" = { input = "0.80", output = "4.00" }
"claude-*" = { input = "3", output = "15" }
"#;

    fn usage(model: &str, input: u64, output: u64) -> TokenUsage<'static> {
        TokenUsage::tokens(input, output).with_model(model.to_owned())
    }

    #[test]
    fn gpt_4o_thousand_in_thousand_out_is_exact() {
        let pricing = Pricing::from_toml(TABLE).unwrap();
        assert_eq!(
            pricing.cost_nano_usd(&usage("gpt-4o", 1000, 1000)),
            Some(12_500_000)
        );
    }

    #[test]
    fn cached_tokens_use_their_price_and_are_capped_at_input() {
        let pricing = Pricing::from_toml(TABLE).unwrap();
        // 1000 input of which 400 cached: 600 × 2.50 + 400 × 1.25 = 1500 + 500 = 2000 µUSD.
        let cached = usage("gpt-4o", 1000, 0).with_cached_input_tokens(400);
        assert_eq!(pricing.cost_nano_usd(&cached), Some(2_000_000));
        let too_many = usage("gpt-4o", 10, 0).with_cached_input_tokens(400);
        assert_eq!(pricing.cost_nano_usd(&too_many), Some(12_500)); // 10 × 1.25
                                                                    // No cached price: billed at input.
        let haiku = usage("claude-3-5-haiku-20241022", 1000, 0).with_cached_input_tokens(1000);
        assert_eq!(pricing.cost_nano_usd(&haiku), Some(800_000));
    }

    #[test]
    fn the_longest_prefix_wins_and_exact_names_beat_prefixes() {
        let pricing = Pricing::from_toml(TABLE).unwrap();
        let haiku = pricing.price_of("claude-3-5-haiku-20241022").unwrap();
        assert_eq!(haiku.input, "0.80".parse().unwrap());
        let sonnet = pricing.price_of("claude-3-7-sonnet").unwrap();
        assert_eq!(sonnet.input, "3".parse().unwrap());
        assert!(pricing.price_of("gpt-4o-mini").is_none());
        assert!(pricing.price_of("gpt-4").is_none());
    }

    #[test]
    fn rounding_is_once_and_half_up() {
        let price = ModelPrice::new("0.000000001", "0").unwrap(); // 10⁻¹⁵ USD per token
        let tokens = |n| TokenUsage::tokens(n, 0);
        assert_eq!(price.cost_nano_usd(&tokens(499_999)), Some(0));
        assert_eq!(price.cost_nano_usd(&tokens(500_000)), Some(1)); // exactly half: up
        assert_eq!(price.cost_nano_usd(&tokens(1_499_999)), Some(1));
        assert_eq!(price.cost_nano_usd(&tokens(1_500_000)), Some(2));
        // Rounded once over the sum, not per component: 0.6 + 0.6 nano = 1.2 → 1, not 2.
        let split = ModelPrice::new("0.0006", "0.0006").unwrap(); // 0.6 nano-USD per token each
        assert_eq!(split.cost_nano_usd(&TokenUsage::tokens(1, 1)), Some(1));
    }

    #[test]
    fn the_largest_counts_do_not_overflow() {
        let price = ModelPrice::new("1000000", "1000000").unwrap();
        let cost = price.cost_nano_usd(&TokenUsage::tokens(u64::MAX, u64::MAX));
        assert_eq!(
            cost,
            Some(i64::MAX),
            "saturates at the largest storable cost"
        );
    }

    #[test]
    fn prices_parse_exactly_or_not_at_all() {
        for (text, nanos) in [
            ("2.50", 2_500_000_000),
            ("0", 0),
            ("10", 10_000_000_000),
            (".5", 500_000_000),
            ("0.000000001", 1),
        ] {
            assert_eq!(
                text.parse::<Price>().unwrap().nano_usd_per_million(),
                nanos,
                "{text}"
            );
        }
        for bad in [
            "-1",
            "1e3",
            "",
            ".",
            "1.2.3",
            "abc",
            "0.0000000001",
            "1,5",
            "+2",
        ] {
            assert!(bad.parse::<Price>().is_err(), "{bad:?} parsed");
        }
        assert_eq!("2.50".parse::<Price>().unwrap().to_string(), "2.50");
        assert_eq!(
            "0.000000001".parse::<Price>().unwrap().to_string(),
            "0.000000001"
        );
    }

    #[test]
    fn errors_name_the_file_model_and_field() {
        let err = Pricing::from_toml("[models.\"gpt-4o\"]\ninput = \"-2\"\noutput = \"1\"\n")
            .unwrap_err();
        assert_eq!((err.model(), err.field()), (Some("gpt-4o"), Some("input")));
        assert!(
            err.to_string().contains("model `gpt-4o`, field `input`"),
            "{err}"
        );

        let err = Pricing::from_toml("[models.m]\ninput = 2.5\noutput = \"1\"\n").unwrap_err();
        assert!(err.to_string().contains("as strings"), "{err}");
        let err = Pricing::from_toml("[models.m]\ninput = \"1\"\n").unwrap_err();
        assert_eq!(err.field(), Some("output"));
        let err = Pricing::from_toml("[models.m]\ninput = \"1\"\noutput = \"1\"\nimput = \"1\"")
            .unwrap_err();
        assert_eq!(err.field(), Some("imput"));
        let err =
            Pricing::from_toml("[models.\"a*b\"]\ninput = \"1\"\noutput = \"1\"").unwrap_err();
        assert_eq!(err.model(), Some("a*b"));
        assert!(Pricing::from_toml("[models").is_err());

        let dir = std::env::temp_dir().join(format!("pricing-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prices.toml");
        std::fs::write(&path, "[models.x]\ninput = \"1\"\noutput = \"oops\"\n").unwrap();
        let err = Pricing::from_file(&path).unwrap_err();
        assert_eq!(err.file(), Some(path.as_path()));
        assert!(err.to_string().contains("prices.toml"), "{err}");
        assert!(Pricing::from_file(dir.join("missing.toml")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
