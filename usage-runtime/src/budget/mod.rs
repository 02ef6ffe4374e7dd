//! Budgets as configuration: what each limits (cost, tokens or calls), for whom (each tenant,
//! each user, or everyone), over which window (a UTC calendar day or month, or the last N
//! hours), with a default limit, per-tenant overrides, alert thresholds and what to do when the
//! shared counters cannot be reached. Enforcement before the call builds on these.
//!
//! ```toml
//! [budgets.chat-monthly]
//! limit = "cost"             # cost (USD), tokens or calls
//! scope = "tenant"           # tenant, user or global
//! operations = ["chat"]      # optional: only these operations count and are checked
//! window = "month"           # day, month (UTC calendar) or rolling hours: "24h"
//! default = "100.00"         # USD as a decimal string for cost; an integer otherwise
//! alerts = [80, 95, 100]     # percent of the limit; optional
//! when_unavailable = "open"  # open (allow, count, warn) or closed (refuse); default open
//!
//! [budgets.chat-monthly.tenants]   # a plan's limit per tenant
//! acme = "500.00"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

use crate::pipeline::pricing::Price;

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Cost, in nano-USD (written in USD).
    Cost,
    /// Tokens: input and output together.
    Tokens,
    /// Calls.
    Calls,
}

/// Whose spend a budget adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each tenant apart.
    Tenant,
    /// Each user apart.
    User,
    /// Every call together.
    Global,
}

/// The span a budget's spend is added up over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The UTC calendar day.
    Day,
    /// The UTC calendar month.
    Month,
    /// The last this many hours, in whole hours (the rollups' grain).
    Rolling {
        /// At least 1.
        hours: u32,
    },
}

impl Window {
    /// When the window holding `at` began: midnight, the first of the month, or `hours` whole
    /// hours before the end of `at`'s hour.
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let midnight =
            |day: NaiveDate| Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN));
        match self {
            Window::Day => midnight(at.date_naive()),
            Window::Month => midnight(at.date_naive().with_day(1).unwrap_or(at.date_naive())),
            Window::Rolling { hours } => {
                crate::rollup::hour_of(at) + Duration::hours(1) - Duration::hours(i64::from(hours))
            }
        }
    }

    /// When the window holding `at` ends and spend starts again from nothing: the next
    /// midnight or first of the month; for a rolling window, the end of `at`'s hour, when its
    /// oldest hour leaves it.
    pub fn reset(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.start(at);
        match self {
            Window::Day => start + Duration::days(1),
            Window::Month => {
                let first = start.date_naive();
                let next = first
                    .checked_add_months(chrono::Months::new(1))
                    .unwrap_or(first);
                Utc.from_utc_datetime(&next.and_time(chrono::NaiveTime::MIN))
            }
            Window::Rolling { .. } => crate::rollup::hour_of(at) + Duration::hours(1),
        }
    }
}

/// What a budget does when the shared counters cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenUnavailable {
    /// Allow the call, count it, warn.
    #[default]
    Open,
    /// Refuse the call.
    Closed,
}

/// One budget.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Budget {
    /// Its name, as `budget = "..."` names it.
    pub name: String,
    /// What it counts.
    pub limit: Limit,
    /// Whose spend it adds up.
    pub scope: Scope,
    /// The operations it applies to; empty for every operation.
    pub operations: Vec<String>,
    /// The span it adds up over.
    pub window: Window,
    /// The limit (nano-USD, tokens or calls) for a tenant without an override.
    pub default: u64,
    /// Limits per tenant.
    pub tenants: BTreeMap<String, u64>,
    /// Alert thresholds, percent of the limit, ascending.
    pub alerts: Vec<u8>,
    /// What to do when the shared counters cannot be reached.
    pub when_unavailable: WhenUnavailable,
}

impl Budget {
    /// The limit for `tenant`: its override, else the default.
    pub fn limit_for(&self, tenant: Option<&str>) -> u64 {
        tenant
            .and_then(|tenant| self.tenants.get(tenant))
            .copied()
            .unwrap_or(self.default)
    }

    /// Whether calls of `operation` count against this budget.
    pub fn applies_to(&self, operation: &str) -> bool {
        self.operations.is_empty() || self.operations.iter().any(|op| op == operation)
    }
}

/// Every budget, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budgets {
    budgets: BTreeMap<String, Budget>,
}

impl Budgets {
    /// The budget named `name`.
    pub fn get(&self, name: &str) -> Option<&Budget> {
        self.budgets.get(name)
    }

    /// Every budget, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Budget> {
        self.budgets.values()
    }

    /// Parses the TOML format of the [module docs](self).
    pub fn from_toml(text: &str) -> Result<Self, BudgetError> {
        parse(text, None)
    }

    /// Reads and parses a budgets file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, BudgetError> {
        let path = path.as_ref();
        let text = crate::pipeline::pricing::read_config(path).map_err(|reason| BudgetError {
            file: Some(path.to_path_buf()),
            budget: None,
            key: None,
            reason,
        })?;
        parse(&text, Some(path))
    }
}

/// A budgets file could not be read: names the file, the budget and the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetError {
    /// The file, when read from one.
    pub file: Option<PathBuf>,
    /// The budget at fault, if one is.
    pub budget: Option<String>,
    /// The key at fault, if one is.
    pub key: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = [("budget", &self.budget), ("key", &self.key)];
        crate::pipeline::pricing::describe_file_error(f, "budgets", self.file.as_deref(), place)?;
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for BudgetError {}

/// The keys a budget's table may hold.
const KEYS: [&str; 8] = [
    "limit",
    "scope",
    "operations",
    "window",
    "default",
    "tenants",
    "alerts",
    "when_unavailable",
];

fn parse(text: &str, file: Option<&Path>) -> Result<Budgets, BudgetError> {
    let fail = |budget: Option<&str>, key: Option<&str>, reason: String| BudgetError {
        file: file.map(Path::to_path_buf),
        budget: budget.map(str::to_owned),
        key: key.map(str::to_owned),
        reason,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(None, None, format!("not valid TOML: {e}")))?;
    let mut budgets = Budgets::default();
    for (key, value) in &table {
        if key != "budgets" {
            let reason = "unknown top-level key; budgets go in [budgets.<name>] tables";
            return Err(fail(None, Some(key), reason.into()));
        }
        let Some(all) = value.as_table() else {
            return Err(fail(None, Some(key), "expected a table of budgets".into()));
        };
        for (name, entry) in all {
            let at = |key: &str, reason: String| fail(Some(name), Some(key), reason);
            let entry = entry
                .as_table()
                .ok_or_else(|| fail(Some(name), None, "expected a table".into()))?;
            if let Some(unknown) = entry.keys().find(|key| !KEYS.contains(&key.as_str())) {
                let reason = format!("unknown key; expected one of {}", KEYS.join(", "));
                return Err(at(unknown, reason));
            }
            let text = |key: &str| -> Result<&str, BudgetError> {
                entry
                    .get(key)
                    .ok_or_else(|| at(key, "missing".into()))?
                    .as_str()
                    .ok_or_else(|| at(key, "expected a string".into()))
            };
            let limits = [
                ("cost", Limit::Cost),
                ("tokens", Limit::Tokens),
                ("calls", Limit::Calls),
            ];
            let limit = choice("limit", text("limit")?, &limits).map_err(|r| at("limit", r))?;
            let scopes = [
                ("tenant", Scope::Tenant),
                ("user", Scope::User),
                ("global", Scope::Global),
            ];
            let scope = choice("scope", text("scope")?, &scopes).map_err(|r| at("scope", r))?;
            let window = window(text("window")?).map_err(|reason| at("window", reason))?;
            let amount =
                |key: &str, value: &toml::Value| amount(limit, value).map_err(|r| at(key, r));
            let default = amount(
                "default",
                entry
                    .get("default")
                    .ok_or_else(|| at("default", "missing".into()))?,
            )?;
            let mut tenants = BTreeMap::new();
            if let Some(value) = entry.get("tenants") {
                let table = value
                    .as_table()
                    .ok_or_else(|| at("tenants", "expected a table of tenant = limit".into()))?;
                for (tenant, value) in table {
                    tenants.insert(tenant.clone(), amount(&format!("tenants.{tenant}"), value)?);
                }
            }
            let operations = match entry.get("operations") {
                None => Vec::new(),
                Some(toml::Value::Array(items)) => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        at("operations", "expected an array of operation names".into())
                    })?,
                Some(_) => {
                    return Err(at(
                        "operations",
                        "expected an array of operation names".into(),
                    ))
                }
            };
            let alerts = match entry.get("alerts") {
                None => Vec::new(),
                Some(toml::Value::Array(items)) => {
                    let mut alerts = items
                        .iter()
                        .map(|item| {
                            item.as_integer()
                                .and_then(|n| u8::try_from(n).ok())
                                .filter(|n| (1..=100).contains(n))
                        })
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| at("alerts", "expected percentages from 1 to 100".into()))?;
                    alerts.sort_unstable();
                    alerts.dedup();
                    alerts
                }
                Some(_) => return Err(at("alerts", "expected an array of percentages".into())),
            };
            let when_unavailable = match entry.get("when_unavailable").map(|v| v.as_str()) {
                None => WhenUnavailable::Open,
                Some(Some("open")) => WhenUnavailable::Open,
                Some(Some("closed")) => WhenUnavailable::Closed,
                Some(_) => {
                    return Err(at(
                        "when_unavailable",
                        "expected \"open\" or \"closed\"".into(),
                    ))
                }
            };
            budgets.budgets.insert(
                name.clone(),
                Budget {
                    name: name.clone(),
                    limit,
                    scope,
                    operations,
                    window,
                    default,
                    tenants,
                    alerts,
                    when_unavailable,
                },
            );
        }
    }
    Ok(budgets)
}

/// The value `text` names among `choices`.
fn choice<T: Copy>(key: &str, text: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            format!(
                "`{text}` is not a {key}: expected one of {}",
                names.join(", ")
            )
        })
}

/// `day`, `month`, or rolling whole hours: `24h`.
fn window(text: &str) -> Result<Window, String> {
    match text {
        "day" => Ok(Window::Day),
        "month" => Ok(Window::Month),
        _ => text
            .strip_suffix('h')
            .and_then(|hours| hours.parse::<u32>().ok())
            .filter(|hours| *hours >= 1)
            .map(|hours| Window::Rolling { hours })
            .ok_or_else(|| format!("`{text}`: expected day, month or whole hours such as \"24h\"")),
    }
}

/// A limit: USD as a decimal string for a cost (held in nano-USD), else a non-negative integer.
fn amount(limit: Limit, value: &toml::Value) -> Result<u64, String> {
    match (limit, value) {
        (Limit::Cost, toml::Value::String(usd)) => usd
            .parse::<Price>()
            .map(Price::nano_usd_per_million)
            .map_err(|error| error.to_string().replace("a price", "an amount in USD")),
        (Limit::Cost, other) => Err(format!(
            "`{other}`: write a cost in USD as a string so it stays exact, such as \"100.00\""
        )),
        (_, toml::Value::Integer(n)) if *n >= 0 => Ok(*n as u64),
        (_, other) => Err(format!("`{other}`: expected a non-negative integer")),
    }
}

#[cfg(test)]
mod tests;
