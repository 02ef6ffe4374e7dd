//! The TOML pricing format of the [module docs](super).

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};

use super::{parse_field, ModelPrice, PriceTier, Pricing, PricingError, RATES};

type Entry = (Option<DateTime<Utc>>, ModelPrice, Vec<PriceTier>);

pub(super) fn parse(text: &str, file: Option<&Path>) -> Result<Pricing, PricingError> {
    let error = |model: Option<&str>, field: Option<&str>, reason: String| {
        PricingError::new(file, model, field, reason)
    };
    let table: ::toml::Table = text
        .parse()
        .map_err(|e: ::toml::de::Error| error(None, None, format!("not valid TOML: {e}")))?;
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
        for (model, value) in models {
            let entries = match value {
                ::toml::Value::Table(entry) => vec![entry_of(entry, file, model)?],
                ::toml::Value::Array(entries) => entries
                    .iter()
                    .map(|entry| match entry {
                        ::toml::Value::Table(entry) => entry_of(entry, file, model),
                        _ => Err(error(Some(model), None, "expected tables of prices".into())),
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(error(
                        Some(model),
                        None,
                        "expected a table with `input` and `output`".into(),
                    ))
                }
            };
            pricing.insert(model, entries, file)?;
        }
    }
    Ok(pricing)
}

/// One entry: its `since`, its rates and its `tiers`.
fn entry_of(
    table: &::toml::Table,
    file: Option<&Path>,
    model: &str,
) -> Result<Entry, PricingError> {
    let error =
        |field: &str, reason: String| PricingError::new(file, Some(model), Some(field), reason);
    let since = match table.get("since") {
        None => None,
        Some(::toml::Value::String(text)) => Some(since(text).ok_or_else(|| {
            error(
                "since",
                format!("`{text}` is not a date (2025-01-31) or an RFC 3339 time"),
            )
        })?),
        Some(::toml::Value::Datetime(at)) => Some(since(&at.to_string()).ok_or_else(|| {
            error(
                "since",
                format!("`{at}` is not a full date or a time with an offset"),
            )
        })?),
        Some(other) => return Err(error("since", format!("`{other}` is not a date"))),
    };
    let price = rates(table, file, model, &["since", "tiers"], None)?;
    let tiers = match table.get("tiers") {
        None => Vec::new(),
        Some(::toml::Value::Array(tiers)) => tiers
            .iter()
            .map(|tier| {
                let tier = tier
                    .as_table()
                    .ok_or_else(|| error("tiers", "expected tables of rates".into()))?;
                let above = match tier.get("above_input_tokens") {
                    Some(::toml::Value::Integer(n)) if *n >= 0 => *n as u64,
                    _ => {
                        return Err(error(
                            "above_input_tokens",
                            "every tier needs `above_input_tokens`, a non-negative integer".into(),
                        ))
                    }
                };
                Ok(PriceTier {
                    above_input_tokens: above,
                    price: rates(tier, file, model, &["above_input_tokens"], Some(price))?,
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(error("tiers", "expected an array of tables".into())),
    };
    Ok((since, price, tiers))
}

/// `2025-01-31` (midnight UTC) or an RFC 3339 time.
fn since(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// The rates of `table`: a base entry's, which must give `input` and `output`, or a tier's of
/// `base`, whose rates it does not give are the base's. Keys in `other` belong to the caller.
fn rates(
    table: &::toml::Table,
    file: Option<&Path>,
    model: &str,
    other: &[&str],
    base: Option<ModelPrice>,
) -> Result<ModelPrice, PricingError> {
    let error =
        |field: &str, reason: String| PricingError::new(file, Some(model), Some(field), reason);
    for field in ["input", "output"] {
        if base.is_none() && !table.contains_key(field) {
            return Err(error(
                field,
                "missing; every model needs `input` and `output`".into(),
            ));
        }
    }
    let mut price = base.unwrap_or_default();
    for (field, value) in table {
        if other.contains(&field.as_str()) {
            continue;
        }
        if !RATES.contains(&field.as_str()) {
            return Err(error(
                field,
                format!("unknown field; expected {}", RATES.join(", ")),
            ));
        }
        let parsed = match value {
            ::toml::Value::String(text) => parse_field(file, Some(model), field, text)?,
            ::toml::Value::Integer(n) if *n >= 0 => {
                parse_field(file, Some(model), field, &n.to_string())?
            }
            ::toml::Value::Float(f) => {
                return Err(error(
                    field,
                    format!("write prices as strings so they stay exact, e.g. {field} = \"{f}\""),
                ))
            }
            other => {
                return Err(error(
                    field,
                    format!("`{other}` is not a non-negative decimal string"),
                ))
            }
        };
        price
            .set(field, parsed)
            .map_err(|reason| error(field, reason))?;
    }
    Ok(price)
}
