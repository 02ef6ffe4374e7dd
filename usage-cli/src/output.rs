//! What the commands print: a report and the operation catalog, as a table, JSON or CSV.

use usage_runtime::report::{OperationRow, ReportRow, Summary};

use crate::Format;

/// A report row's figures, named as in JSON and CSV.
const FIGURES: [&str; 8] = [
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cost_nano_usd",
    "p50_ms",
    "p95_ms",
    "p99_ms",
];

/// The same figures' headers in a table.
const TABLE_FIGURES: [&str; 8] = [
    "calls",
    "errors",
    "tokens in",
    "tokens out",
    "cost (USD)",
    "p50 ms",
    "p95 ms",
    "p99 ms",
];

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
                    let figures: [serde_json::Value; 8] = [
                        row.calls.into(),
                        row.errors.into(),
                        row.input_tokens.into(),
                        row.output_tokens.into(),
                        row.cost_nano_usd.into(),
                        row.p50_ms.into(),
                        row.p95_ms.into(),
                        row.p99_ms.into(),
                    ];
                    for (name, value) in FIGURES.into_iter().zip(figures) {
                        object.insert(name.into(), value);
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
            let mut out = csv::Writer::from_writer(std::io::stdout());
            let _ = out.write_record(header(&columns, FIGURES));
            for row in &report.rows {
                let _ = out.write_record(cells(&columns, row, row.cost_nano_usd.to_string(), 3));
            }
            let _ = out.flush();
        }
        Format::Table => {
            let mut table = comfy_table::Table::new();
            table.set_header(header(&columns, TABLE_FIGURES));
            for row in &report.rows {
                table.add_row(cells(&columns, row, dollars(row.cost_nano_usd), 1));
            }
            println!("{table}");
        }
    }
}

/// The group's columns, then the figures.
fn header(columns: &[String], figures: [&str; 8]) -> Vec<String> {
    columns
        .iter()
        .cloned()
        .chain(figures.map(String::from))
        .collect()
}

/// A row's cells under [`header`]: its group's values, then its figures, with the cost as given
/// and the latencies to `decimals` places.
fn cells(columns: &[String], row: &ReportRow, cost: String, decimals: usize) -> Vec<String> {
    let mut cells: Vec<String> = columns
        .iter()
        .map(|c| row.group.get(c).cloned().unwrap_or_default())
        .collect();
    cells.extend([
        row.calls.to_string(),
        row.errors.to_string(),
        row.input_tokens.to_string(),
        row.output_tokens.to_string(),
        cost,
        format!("{:.decimals$}", row.p50_ms),
        format!("{:.decimals$}", row.p95_ms),
        format!("{:.decimals$}", row.p99_ms),
    ]);
    cells
}

/// The operation catalog, each silent operation marked.
pub(crate) fn print_operations(operations: &[OperationRow], format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(operations).expect("rows serialize")
        ),
        Format::Csv => {
            let mut out = csv::Writer::from_writer(std::io::stdout());
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
