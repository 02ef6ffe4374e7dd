//! Sorting sqlx's errors: transient (retry), rejected (quarantine the record), other.

use crate::error::{Failure, FailureKind};

impl Failure for sqlx::Error {
    fn kind(&self) -> FailureKind {
        match self {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => FailureKind::Transient,
            sqlx::Error::Encode(_) => FailureKind::Rejected,
            sqlx::Error::Database(db) => database_failure(db.as_ref()),
            _ => FailureKind::Other,
        }
    }

    fn boxed(self) -> crate::error::BoxError {
        self.into()
    }
}

/// Sorts a database's own error codes: PostgreSQL SQLSTATEs, MySQL error numbers, SQLite result
/// codes.
fn database_failure(db: &(dyn sqlx::error::DatabaseError + 'static)) -> FailureKind {
    let code = db.code().unwrap_or_default();
    #[cfg(feature = "mysql")]
    if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return match mysql.number() {
            // gone away, lost connection, lock wait timeout, deadlock, too many connections,
            // server shutdown, read-only (failover)
            2006 | 2013 | 1205 | 1213 | 1040 | 1053 | 1290 | 1836 => FailureKind::Transient,
            // data too long, incorrect value, out of range, truncated, bad date, null in not-null,
            // invalid JSON, foreign key, check constraint (MySQL, MariaDB), incorrect string
            // (encoding) ... and a statement or value too large for the server (packet, row size)
            1406 | 1366 | 1264 | 1265 | 1292 | 1048 | 3140 | 1452 | 3819 | 4025 | 1300 | 1153
            | 1301 | 1118 => FailureKind::Rejected,
            _ => FailureKind::Other,
        };
    }
    #[cfg(feature = "sqlite")]
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Primary result code: the low byte of the extended code.
        let primary = code.parse::<u32>().map_or(0, |code| code & 0xff);
        return match primary {
            5 | 6 | 10 | 13 | 15 => FailureKind::Transient, // busy, locked, I/O, full, protocol
            18 | 19 | 20 | 25 => FailureKind::Rejected,     // too big, constraint, mismatch, range
            _ => FailureKind::Other,
        };
    }
    match code.get(..2) {
        // connection exception, insufficient resources, operator intervention, system error
        Some("08") | Some("53") | Some("57") | Some("58") => FailureKind::Transient,
        // serialization failure, deadlock; lock not available
        Some("40") => FailureKind::Transient,
        _ if code == "55P03" => FailureKind::Transient,
        // data exception, integrity constraint violation, program limit (a value too large for
        // an index row)
        Some("22") | Some("23") | Some("54") => FailureKind::Rejected,
        _ => FailureKind::Other,
    }
}
