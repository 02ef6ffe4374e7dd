//! LiteLLM's `model_prices_and_context_window.json`: per-token prices as JSON numbers.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{ModelPrice, Price, PriceTier, Pricing, PricingError};

/// LiteLLM's key for each of our rates.
const KEYS: [(&str, &str); 8] = [
    ("input_cost_per_token", "input"),
    ("output_cost_per_token", "output"),
    ("cache_read_input_token_cost", "cached_input"),
    ("cache_creation_input_token_cost", "cache_creation"),
    (
        "cache_creation_input_token_cost_above_1hr",
        "cache_creation_1h",
    ),
    ("output_cost_per_reasoning_token", "reasoning"),
    ("input_cost_per_audio_token", "audio_input"),
    ("output_cost_per_audio_token", "audio_output"),
];

/// The entry LiteLLM keeps to document its keys, not a model.
const SAMPLE: &str = "sample_spec";

pub(super) fn parse(text: &str, file: Option<&Path>) -> Result<Pricing, PricingError> {
    let error = |model: Option<&str>, field: Option<&str>, reason: String| {
        PricingError::new(file, model, field, reason)
    };
    let table: serde_json::Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| error(None, None, format!("not a JSON object of models: {e}")))?;
    let mut pricing = Pricing::new();
    for (model, entry) in &table {
        if model == SAMPLE {
            continue;
        }
        let entry = entry
            .as_object()
            .ok_or_else(|| error(Some(model), None, "expected an object".into()))?;
        if !entry.contains_key(KEYS[0].0) || !entry.contains_key(KEYS[1].0) {
            continue; // priced per image, second or character: not by token
        }
        let mut price = ModelPrice::default();
        let mut tiers: BTreeMap<u64, Vec<(&str, Price)>> = BTreeMap::new();
        for (key, value) in entry {
            let (rate, above) = match rate_of(key) {
                Some(found) => found,
                None => continue,
            };
            let per_million =
                per_million(value).map_err(|reason| error(Some(model), Some(key), reason))?;
            match above {
                None => price.set(rate, per_million),
                Some(threshold) => {
                    tiers
                        .entry(threshold)
                        .or_default()
                        .push((rate, per_million));
                    Ok(())
                }
            }
            .map_err(|reason| error(Some(model), Some(key), reason))?;
        }
        let tiers = tiers
            .into_iter()
            .map(|(above, rates)| {
                let mut tier = price;
                for (rate, per_million) in rates {
                    tier.set(rate, per_million)
                        .map_err(|reason| error(Some(model), None, reason))?;
                }
                Ok(PriceTier {
                    above_input_tokens: above,
                    price: tier,
                })
            })
            .collect::<Result<_, PricingError>>()?;
        pricing.insert(model, vec![(None, price, tiers)], file)?;
    }
    Ok(pricing)
}

/// Our rate for a LiteLLM key, and the tier's threshold for an `_above_<N>k_tokens` key; `None`
/// for a key we do not read.
fn rate_of(key: &str) -> Option<(&'static str, Option<u64>)> {
    let find = |base: &str| KEYS.iter().find(|(k, _)| *k == base).map(|(_, rate)| *rate);
    if let Some(rate) = find(key) {
        return Some((rate, None));
    }
    let (base, size) = key.strip_suffix("_tokens")?.rsplit_once("_above_")?;
    let thousands: u64 = size.strip_suffix('k')?.parse().ok()?;
    Some((find(base)?, Some(thousands.checked_mul(1000)?)))
}

/// A per-token price as a JSON number, per million tokens: the shortest decimal that reads back
/// as the same double, moved six places, rounded once, half up, to 10⁻⁹ USD.
fn per_million(value: &Value) -> Result<Price, String> {
    let number = value
        .as_f64()
        .filter(|_| value.is_number())
        .ok_or_else(|| format!("`{value}` is not a number"))?;
    if !number.is_finite() || number < 0.0 {
        return Err(format!("`{value}` is not a non-negative price"));
    }
    if number == 0.0 {
        return Ok(Price::default()); // `-0.0` too, which `{:e}` writes with its sign
    }
    // `{:e}` writes the shortest digits that round-trip: `2.5e-6`, `1e-5`, `0e0`.
    let text = format!("{number:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let exponent: i32 = exponent.parse().map_err(|_| format!("`{value}`: {text}"))?;
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: u128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| format!("`{value}`: {text}"))?;
    // value = digits × 10^(exponent − fraction digits); per million tokens in 10⁻⁹ USD is
    // value × 10⁶ × 10⁹.
    let shift = exponent - fraction.len() as i32 + 15;
    let too_large = || format!("`{value}` is too large a price");
    let nanos = if shift >= 0 {
        10u128
            .checked_pow(shift as u32)
            .and_then(|scale| digits.checked_mul(scale))
            .ok_or_else(too_large)?
    } else {
        match 10u128.checked_pow(shift.unsigned_abs()) {
            Some(scale) => (digits + scale / 2) / scale,
            None => 0, // below 10⁻³⁸ of a nano-USD per million
        }
    };
    u64::try_from(nanos)
        .map(Price::from_nano_usd_per_million)
        .map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_token_floats_become_exact_prices() {
        for (json, nanos) in [
            ("2.5e-06", 2_500_000_000),
            ("1e-05", 10_000_000_000),
            ("0.0", 0),
            ("0", 0),
            ("7.5e-08", 75_000_000),
            ("1.25e-07", 125_000_000),
            ("3e-07", 300_000_000),
            ("0.00000011", 110_000_000),
            // Below 10⁻⁹ USD per million: rounded once, half up.
            ("4e-16", 0),
            ("5e-16", 1),
            ("1.5e-15", 2),
            ("12", 12_000_000_000_000_000),
            ("-0.0", 0),
        ] {
            let value: Value = serde_json::from_str(json).unwrap();
            assert_eq!(
                per_million(&value).map(Price::nano_usd_per_million),
                Ok(nanos),
                "{json}"
            );
        }
        for bad in ["-1e-06", "\"2.5e-06\"", "true", "1e30"] {
            let value: Value = serde_json::from_str(bad).unwrap();
            assert!(per_million(&value).is_err(), "{bad}");
        }
    }

    #[test]
    fn tier_keys_are_read_by_their_threshold() {
        assert_eq!(rate_of("input_cost_per_token"), Some(("input", None)));
        assert_eq!(
            rate_of("input_cost_per_token_above_200k_tokens"),
            Some(("input", Some(200_000)))
        );
        assert_eq!(
            rate_of("cache_creation_input_token_cost_above_1hr"),
            Some(("cache_creation_1h", None))
        );
        assert_eq!(
            rate_of("cache_creation_input_token_cost_above_1hr_above_200k_tokens"),
            Some(("cache_creation_1h", Some(200_000)))
        );
        for ignored in [
            "input_cost_per_token_batches",
            "input_cost_per_token_above_200k_tokens_priority",
            "input_cost_per_character_above_128k_tokens",
            "max_input_tokens",
            "cache_creation_input_token_cost_above_12hr",
        ] {
            assert_eq!(rate_of(ignored), None, "{ignored}");
        }
    }
}
