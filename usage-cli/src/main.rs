//! `usage`: read and maintain what the usage tracker wrote.
//!
//! Exit codes: 0 success, 1 failure (a database, a file), 2 bad usage (clap's own).

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
mod ingest;
mod output;

use clap::{Args, Parser, Subcommand, ValueEnum};
use usage_runtime::report::{GroupBy, Query, Reader, TimeBucket};
use usage_runtime::sink::{AnySqlSink, SqlConfig};
use usage_runtime::{Error, Tracker};

const EXAMPLES: &str = "\
Examples:
  usage report --database-url sqlite://usage.db --since 7d --by operation,tenant
  usage report --database-url postgres://app@db/usage --since 30d --tenant acme --by day --format json
  usage operations --database-url sqlite://usage.db --since 7d
  usage verify --database-url mysql://app:secret@db:3306/usage
  usage spool status --dir /var/lib/app/usage-spool
  usage spool replay --dir /var/lib/app/usage-spool --database-url sqlite://usage.db
  usage prune --database-url sqlite://usage.db --older-than 30d
  usage reprice --database-url sqlite://usage.db --pricing prices.toml --since 30d --dry-run
  usage ingest --nats nats://127.0.0.1:4222 --stream USAGE --consumer writers \\
      --database-url postgres://app@db/usage";

#[derive(Debug, Parser)]
#[command(name = "usage", version, about = "Reports and maintenance for usage tracking", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Database {
    /// The database: sqlite://..., postgres://... or mysql://...
    #[arg(long, env = "USAGE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The table prefix the tracker's sink was configured with.
    #[arg(long, default_value = "")]
    table_prefix: String,
}

impl Database {
    fn config(&self) -> Result<SqlConfig, Error> {
        SqlConfig::new().table_prefix(&self.table_prefix)
    }

    async fn reader(&self) -> Result<Reader, Error> {
        Reader::connect_with(&self.database_url, self.config()?).await
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Calls, errors, tokens, cost and latency, filtered and grouped.
    Report {
        #[command(flatten)]
        database: Database,
        /// Calls since: an age (7d, 12h, 30m; rounded down to the hour, so the rollups answer)
        /// or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Calls before: an age or an RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this operation.
        #[arg(long)]
        operation: Option<String>,
        /// Only this model.
        #[arg(long)]
        model: Option<String>,
        /// Group by: any of service, operation, tenant, user, model, outcome, and hour, day or
        /// month, comma separated.
        #[arg(long, value_delimiter = ',')]
        by: Vec<String>,
        /// Also count distinct users per group (reads the records).
        #[arg(long)]
        distinct_users: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The operation catalog with calls per operation; silent operations are marked.
    Operations {
        #[command(flatten)]
        database: Database,
        /// Count calls since: an age or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Connects, migrates, writes, reads back and deletes a probe record, step by step.
    Verify {
        #[command(flatten)]
        database: Database,
    },
    /// Creates or upgrades the schema.
    Migrate {
        #[command(flatten)]
        database: Database,
    },
    /// The disk spool.
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// Writes the records a tracker's NatsSink published, from a JetStream stream to the
    /// database, acknowledging each batch after its commit; run several with the same consumer
    /// to share the work. Stops on SIGINT or SIGTERM after the batch in hand.
    Ingest {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        args: ingest::IngestArgs,
    },
    /// Deletes records older than an age, keeping the rollups (reports over old months still
    /// answer).
    Prune {
        #[command(flatten)]
        database: Database,
        /// The age: 30d, 12h, ...
        #[arg(long)]
        older_than: String,
    },
    /// Recomputes the cost of stored records with a corrected price table (TOML, or LiteLLM's
    /// JSON), each priced by the entry in force when its call started; shows the change per
    /// model and tenant, and writes it (records and rollups together) unless --dry-run.
    Reprice {
        #[command(flatten)]
        database: Database,
        /// The price table: TOML, or LiteLLM's model_prices_and_context_window.json.
        #[arg(long)]
        pricing: std::path::PathBuf,
        /// Calls since: an age (30d, 12h) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Calls before: an age or an RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only this model.
        #[arg(long)]
        model: Option<String>,
        /// Show the change without writing it.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
enum SpoolCommand {
    /// What the spool holds, without changing it.
    Status {
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Writes what the spool holds to a database.
    Replay {
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Where records the database rejects go, one JSON line each with the reason
        /// [default: quarantine.jsonl in the spool directory].
        #[arg(long)]
        quarantine: Option<std::path::PathBuf>,
        #[command(flatten)]
        database: Database,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}\n\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(Failure::Run(error)) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
        Err(Failure::File(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed: bad usage (exit 2) or a failure while running (exit 1).
#[derive(Debug)]
enum Failure {
    Usage(String),
    Run(Error),
    /// A file the command reads is not what it should be.
    File(String),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidConfig(message) => Failure::Usage(message),
            other => Failure::Run(other),
        }
    }
}

/// A range's since and until, each open when `None`.
type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `--since` and `--until`, each an age or a time (see [`parse_time`]).
fn time_range(since: Option<String>, until: Option<String>) -> Result<Range, Failure> {
    let parse = |text: Option<String>| text.map(|t| parse_time(&t)).transpose();
    Ok((
        parse(since).map_err(usage_error)?,
        parse(until).map_err(usage_error)?,
    ))
}

/// An age (`7d`, `12h`, `30m`, `45s`, `2w`) before now, rounded down to the hour, or an
/// RFC 3339 time.
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let age = parse_age(text)?;
    Utc::now()
        .checked_sub_signed(age)
        .map(usage_runtime::report::hour_start)
        .ok_or_else(|| format!("`{text}` reaches before the start of time"))
}

fn parse_age(text: &str) -> Result<chrono::Duration, String> {
    let bad = || format!("`{text}` is neither an age (7d, 12h, 30m, 45s, 2w) nor an RFC 3339 time");
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let number: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    number
        .checked_mul(seconds)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| format!("`{text}` is too long an age"))
}

fn usage_error(message: String) -> Failure {
    Failure::Usage(message)
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Report {
            database,
            since,
            until,
            tenant,
            operation,
            model,
            by,
            distinct_users,
            format,
        } => {
            let mut query = Query::new();
            let (since, until) = time_range(since, until)?;
            if let Some(since) = since {
                query = query.since(since);
            }
            if let Some(until) = until {
                query = query.until(until);
            }
            if let Some(tenant) = tenant {
                query = query.tenant(tenant);
            }
            if let Some(operation) = operation {
                query = query.operation(operation);
            }
            if let Some(model) = model {
                query = query.model(model);
            }
            let mut dimensions = Vec::new();
            let mut bucketed = false;
            for name in &by {
                let bucket = match name.as_str() {
                    "hour" => Some(TimeBucket::Hour),
                    "day" => Some(TimeBucket::Day),
                    "month" => Some(TimeBucket::Month),
                    other => {
                        dimensions.push(other.parse::<GroupBy>().map_err(usage_error)?);
                        None
                    }
                };
                if let Some(bucket) = bucket {
                    if std::mem::replace(&mut bucketed, true) {
                        return Err(usage_error("--by takes one of hour, day or month".into()));
                    }
                    query = query.bucket(bucket);
                }
            }
            query = query.group_by(dimensions);
            if distinct_users {
                query = query.distinct_users();
            }
            let reader = database.reader().await?;
            output::print_report(&reader.report(&query).await?, &by, format);
            Ok(())
        }
        Command::Operations {
            database,
            since,
            format,
        } => {
            let since = since
                .map(|s| parse_time(&s))
                .transpose()
                .map_err(usage_error)?;
            let reader = database.reader().await?;
            let operations = reader.operations(since).await?;
            output::print_operations(&operations, format);
            Ok(())
        }
        Command::Ingest { database, args } => {
            let config = database
                .config()?
                .write_connections(args.write_connections)?;
            let sink = AnySqlSink::connect_with(&database.database_url, config).await?;
            ingest::run(args, sink).await?;
            Ok(())
        }
        Command::Verify { database } => {
            let report = connect(&database).await?.verify().await?;
            print!("{report}");
            println!("verified");
            Ok(())
        }
        Command::Migrate { database } => {
            connect(&database).await?;
            println!("the schema is up to date");
            Ok(())
        }
        Command::Spool { command } => match command {
            SpoolCommand::Status { dir, format } => {
                let status = spool_status(&dir)?;
                match format {
                    Format::Json | Format::Csv => println!(
                        "{}",
                        serde_json::to_string_pretty(&status).expect("status serializes")
                    ),
                    Format::Table => {
                        println!("segments        {}", status.segments);
                        println!("records         {}", status.records);
                        println!("bytes           {}", status.bytes);
                        println!("torn tails      {}", status.torn_tails);
                        println!("corrupt frames  {}", status.corrupt_frames);
                        println!("set aside       {}", status.set_aside);
                        if let Some(oldest) = status.oldest {
                            println!("oldest call     {}", oldest.to_rfc3339());
                        }
                    }
                }
                Ok(())
            }
            SpoolCommand::Replay {
                dir,
                quarantine,
                database,
            } => {
                let quarantine = quarantine.unwrap_or_else(|| dir.join("quarantine.jsonl"));
                replay(&dir, &quarantine, &database).await
            }
        },
        Command::Prune {
            database,
            older_than,
        } => {
            let age = parse_age(&older_than).map_err(usage_error)?;
            let before = Utc::now()
                .checked_sub_signed(age)
                .ok_or_else(|| usage_error(format!("`{older_than}` is too long an age")))?;
            let reader = database.reader().await?;
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message("records deleted");
            let deleted = reader
                .prune(before, 10_000, |total| bar.set_position(total))
                .await?;
            bar.finish_and_clear();
            println!(
                "deleted {deleted} records older than {older_than} (whole hours); the rollups are kept"
            );
            Ok(())
        }
        Command::Reprice {
            database,
            pricing,
            since,
            until,
            model,
            dry_run,
            format,
        } => {
            let pricing = usage_runtime::Pricing::from_file(&pricing)
                .map_err(|error| Failure::File(error.to_string()))?;
            let (since, until) = time_range(since, until)?;
            let filter = usage_runtime::report::RepriceFilter {
                since,
                until,
                model,
            };
            if !dry_run {
                // The schema first, so the records have their price ids.
                connect(&database).await?;
            }
            let reader = database.reader().await?;
            let bar = indicatif::ProgressBar::new(0);
            let repriced = reader
                .reprice(&pricing, &filter, dry_run, |read, total| {
                    bar.set_length(total);
                    bar.set_position(read);
                })
                .await?;
            bar.finish_and_clear();
            output::print_repriced(&repriced, format);
            Ok(())
        }
    }
}

/// The sink for the URL's scheme, connected (and so migrated).
async fn connect(database: &Database) -> Result<AnySqlSink, Error> {
    AnySqlSink::connect_with(&database.database_url, database.config()?).await
}

impl ingest::Write for AnySqlSink {
    async fn write_batch(&mut self, records: &[usage_runtime::UsageRecord]) -> Result<(), Error> {
        usage_runtime::sink::Sink::write(self, records).await
    }
}

fn spool_status(dir: &std::path::Path) -> Result<usage_runtime::spool::SpoolStatus, Error> {
    usage_runtime::spool::status(dir).map_err(|source| Error::Spool {
        dir: dir.display().to_string(),
        source,
    })
}

async fn replay(
    dir: &std::path::Path,
    quarantine: &std::path::Path,
    database: &Database,
) -> Result<(), Failure> {
    let status = spool_status(dir)?;
    let builder = Tracker::builder()
        .service("usage-cli")
        .spool_dir(dir)
        .quarantine_file(quarantine)
        .max_retries(2);
    let guard = builder.sink(connect(database).await?).install()?;
    let bar = indicatif::ProgressBar::new(status.records);
    let mut stalled = 0;
    loop {
        let before = guard.health().spool_records;
        let _ = guard.flush().await;
        let health = guard.health();
        bar.set_position(status.records.saturating_sub(health.spool_records));
        if health.spool_records == 0 {
            break;
        }
        stalled = if health.spool_records < before {
            0
        } else {
            stalled + 1
        };
        if stalled >= 5 {
            bar.abandon();
            return Err(Failure::Run(Error::NotWritten {
                count: health.spool_records,
                reason: health.last_error.unwrap_or_else(|| "no progress".into()),
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish_and_clear();
    let health = guard.health();
    guard.shutdown().await?;
    if health.quarantined > 0 {
        println!(
            "replayed {} records ({} rejected by the database, kept with the reason in {})",
            health.replayed,
            health.quarantined,
            quarantine.display()
        );
    } else {
        println!("replayed {} records (0 quarantined)", health.replayed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_times_parse() {
        assert!(parse_age("7d").is_ok());
        assert!(parse_age("7y").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
        assert!(
            parse_age("9999999999999999d").is_err(),
            "overflow is an error, not a panic"
        );
        let at = parse_time("2026-11-01T00:00:00Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(
            parse_time("3h").unwrap().timestamp() % 3600,
            0,
            "rounded to the hour"
        );
    }
}
