//! What the commands print: a report and the operation catalog, as a table, JSON or CSV.

use usage_runtime::report::{OperationRow, ReportRow, Repriced, Summary};

use crate::Format;

/// A report row's figures: the name in JSON and CSV, the header in a table, and whether a table
/// leaves the column out when every row has zero there (the token kinds few calls have).
/// The kinds within input and output come last, after the columns older versions printed, so a
/// CSV read by position reads as before.
const FIGURES: [(&str, &str, bool); 14] = [
    ("calls", "calls", false),
    ("errors", "errors", false),
    ("input_tokens", "tokens in", false),
    ("output_tokens", "tokens out", false),
    ("cost_nano_usd", "cost (USD)", false),
    ("p50_ms", "p50 ms", false),
    ("p95_ms", "p95 ms", false),
    ("p99_ms", "p99 ms", false),
    ("cached_input_tokens", "cache read", true),
    ("cache_creation_input_tokens", "cache write", true),
    ("cache_creation_1h_input_tokens", "of which 1h", true),
    ("audio_input_tokens", "audio in", true),
    ("reasoning_tokens", "reasoning", true),
    ("audio_output_tokens", "audio out", true),
];

/// A figure of a row.
#[derive(Clone, Copy)]
enum Figure {
    Count(u64),
    Cost(i64),
    Ms(f64),
}

/// A row's figures, in [`FIGURES`] order.
fn figures(row: &ReportRow) -> [Figure; 14] {
    use Figure::{Cost, Count, Ms};
    [
        Count(row.calls),
        Count(row.errors),
        Count(row.input_tokens),
        Count(row.output_tokens),
        Cost(row.cost_nano_usd),
        Ms(row.p50_ms),
        Ms(row.p95_ms),
        Ms(row.p99_ms),
        Count(row.cached_input_tokens),
        Count(row.cache_creation_input_tokens),
        Count(row.cache_creation_1h_input_tokens),
        Count(row.audio_input_tokens),
        Count(row.reasoning_tokens),
        Count(row.audio_output_tokens),
    ]
}

/// The report, its group's columns named by `--by`.
pub(crate) fn print_report(report: &Summary, by: &[String], format: Format) {
    let columns: Vec<String> = by
        .iter()
        .map(|name| match name.as_str() {
            "hour" | "day" | "month" => "bucket".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    match format {
        Format::Json => {
            let rows: Vec<serde_json::Value> = report
                .rows
                .iter()
                .map(|row| {
                    let mut object = serde_json::Map::new();
                    for (name, value) in &row.group {
                        object.insert(name.clone(), value.clone().into());
                    }
                    for ((name, _, _), figure) in FIGURES.iter().zip(figures(row)) {
                        let value = match figure {
                            Figure::Count(n) => n.into(),
                            Figure::Cost(n) => n.into(),
                            Figure::Ms(ms) => ms.into(),
                        };
                        object.insert((*name).into(), value);
                    }
                    if let Some(users) = row.distinct_users {
                        object.insert("distinct_users".into(), users.into());
                    }
                    serde_json::Value::Object(object)
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&rows).expect("rows serialize")
            );
        }
        Format::Csv => {
            let shown = [true; 14];
            let mut out = csv_out();
            let _ = out.write_record(header(&columns, &shown, |(name, _, _)| name));
            for row in &report.rows {
                let _ = out.write_record(cells(&columns, row, &shown, false));
            }
            let _ = out.flush();
        }
        Format::Table => {
            // A rare kind's column only when some row has it.
            let shown: [bool; 14] = std::array::from_fn(|i| {
                !FIGURES[i].2
                    || report
                        .rows
                        .iter()
                        .any(|row| matches!(figures(row)[i], Figure::Count(n) if n > 0))
            });
            let mut table = comfy_table::Table::new();
            table.set_header(header(&columns, &shown, |(_, header, _)| header));
            for row in &report.rows {
                table.add_row(cells(&columns, row, &shown, true));
            }
            println!("{table}");
        }
    }
}

/// The group's columns, then the figures shown, each named by `name`.
fn header(
    columns: &[String],
    shown: &[bool; 14],
    name: impl Fn(&(&'static str, &'static str, bool)) -> &'static str,
) -> Vec<String> {
    let figures = FIGURES
        .iter()
        .zip(shown)
        .filter(|(_, shown)| **shown)
        .map(|(figure, _)| name(figure).to_owned());
    columns.iter().cloned().chain(figures).collect()
}

/// A row's cells under [`header`]: its group's values, then its figures shown; in a table the
/// cost in dollars and latencies to one place, else the cost in nano-USD and latencies to three.
fn cells(columns: &[String], row: &ReportRow, shown: &[bool; 14], table: bool) -> Vec<String> {
    let mut cells: Vec<String> = columns
        .iter()
        .map(|c| row.group.get(c).cloned().unwrap_or_default())
        .collect();
    let decimals = if table { 1 } else { 3 };
    for (figure, _) in figures(row)
        .into_iter()
        .zip(shown)
        .filter(|(_, shown)| **shown)
    {
        cells.push(match figure {
            Figure::Count(n) => n.to_string(),
            Figure::Cost(n) if table => dollars(n),
            Figure::Cost(n) => n.to_string(),
            Figure::Ms(ms) => format!("{ms:.decimals$}"),
        });
    }
    cells
}

/// `value` as pretty JSON on standard output.
fn print_json(value: &(impl serde::Serialize + ?Sized)) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("what the commands print serializes")
    );
}

/// A CSV writer to standard output.
fn csv_out() -> csv::Writer<std::io::Stdout> {
    csv::Writer::from_writer(std::io::stdout())
}

/// A reprice's CSV columns, as its JSON rows name them.
const REPRICE_COLUMNS: [&str; 5] = [
    "model",
    "tenant",
    "records",
    "old_cost_nano_usd",
    "new_cost_nano_usd",
];

/// A reprice's changes by model and tenant, and what it read.
pub(crate) fn print_repriced(repriced: &Repriced, format: Format) {
    match format {
        Format::Json => print_json(repriced),
        Format::Csv => {
            let mut out = csv_out();
            let _ = out.write_record(REPRICE_COLUMNS);
            for row in &repriced.rows {
                let costs = [row.old_cost_nano_usd, row.new_cost_nano_usd].map(|n| n.to_string());
                let _ = out.write_record(
                    [
                        row.model.clone(),
                        row.tenant.clone(),
                        row.records.to_string(),
                    ]
                    .into_iter()
                    .chain(costs),
                );
            }
            let _ = out.flush();
        }
        Format::Table => {
            let mut table = comfy_table::Table::new();
            table.set_header([
                "model",
                "tenant",
                "records",
                "old cost (USD)",
                "new cost (USD)",
                "change (USD)",
            ]);
            for row in &repriced.rows {
                table.add_row([
                    row.model.clone(),
                    row.tenant.clone(),
                    row.records.to_string(),
                    dollars(row.old_cost_nano_usd),
                    dollars(row.new_cost_nano_usd),
                    dollars(row.new_cost_nano_usd.saturating_sub(row.old_cost_nano_usd)),
                ]);
            }
            println!("{table}");
            let changed: u64 = repriced.rows.iter().map(|row| row.records).sum();
            let verb = if repriced.written {
                "repriced"
            } else {
                "would reprice (dry run)"
            };
            println!(
                "{verb} {changed} of {} records read; {} kept: no price or no tokens",
                repriced.records_read, repriced.records_without_price
            );
        }
    }
}

/// The operation catalog, each silent operation marked.
pub(crate) fn print_operations(operations: &[OperationRow], format: Format) {
    match format {
        Format::Json => print_json(operations),
        Format::Csv => {
            let mut out = csv_out();
            let _ = out.write_record([
                "service",
                "operation",
                "function",
                "file",
                "line",
                "calls",
                "silent",
            ]);
            for op in operations {
                let _ = out.write_record([
                    op.service.clone(),
                    op.operation.clone(),
                    op.function.clone(),
                    op.file.clone(),
                    op.line.to_string(),
                    op.calls.to_string(),
                    (op.calls == 0).to_string(),
                ]);
            }
            let _ = out.flush();
        }
        Format::Table => {
            let mut table = comfy_table::Table::new();
            table.set_header(["service", "operation", "function", "where", "calls", ""]);
            for op in operations {
                table.add_row([
                    op.service.clone(),
                    op.operation.clone(),
                    op.function.clone(),
                    format!("{}:{}", op.file, op.line),
                    op.calls.to_string(),
                    if op.calls == 0 {
                        "SILENT".into()
                    } else {
                        String::new()
                    },
                ]);
            }
            println!("{table}");
            let silent = operations.iter().filter(|op| op.calls == 0).count();
            println!("{} operations, {silent} silent", operations.len());
        }
    }
}

/// Nano-USD as dollars, exactly, with the sign in front.
fn dollars(nano_usd: i64) -> String {
    let sign = if nano_usd < 0 { "-" } else { "" };
    let abs = nano_usd.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_are_exact_and_signed() {
        assert_eq!(dollars(12_500_000), "0.012500000");
        assert_eq!(dollars(-500_000_000), "-0.500000000");
        assert_eq!(dollars(-1_500_000_000), "-1.500000000");
        assert_eq!(dollars(i64::MIN), "-9223372036.854775808");
    }
}
