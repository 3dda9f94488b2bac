//! One error type for the whole crate.
//!
//! Every failure carries an [`ErrorKind`] that decides what happens next:
//! *transient* kinds (a dropped connection, a lock timeout, a target that is
//! restarting) are retried by the central policy in [`crate::retry`];
//! *definite* kinds (a wrong server setting, a missing grant, a purged binlog,
//! a malformed buffer record) stop the pipeline with a message that says what
//! is wrong, what was expected, and how to fix it. Nothing is skipped.

use std::fmt;

use crate::schema::table_ref::TableRef;

/// What went wrong, at the granularity the retry policy and the operator need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration file or environment is invalid.
    Config,
    /// A source server setting is wrong (`binlog_format`, ...).
    SourceSetting,
    /// The source user lacks a privilege.
    SourcePermission,
    /// The source could not be reached or the connection dropped.
    SourceUnavailable,
    /// The binlog position to resume from no longer exists on the source.
    BinlogPurged,
    /// A table or value the replicator cannot represent exactly.
    Unsupported,
    /// A binlog event could not be decoded.
    Decode,
    /// The buffer failed (I/O, corruption, unknown envelope version).
    Buffer,
    /// The buffer's brokers could not be reached or did not acknowledge in time (Kafka).
    BufferUnavailable,
    /// The target could not be reached or the connection dropped.
    TargetUnavailable,
    /// The target user lacks a privilege, or the target refused a statement
    /// for a reason that retrying will not fix.
    TargetRejected,
    /// The target refused a value of one table (out of range, not a valid date for it, a
    /// name it does not allow): that table stops, the others go on.
    ValueRejected,
    /// A bug: an invariant of binferry itself does not hold.
    Internal,
}

/// What an error of a kind stops: the same answer for every source and sink, decided here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Nothing: waiting fixes it. Retried with backoff from the last checkpoint.
    Retry,
    /// The table it concerns: recorded durably in the target, that table's changes skipped
    /// from then on, the others go on. Without a table to name it stops the pipeline.
    Table,
    /// The pipeline: binferry exits with the error and its fix (a restart meets it again
    /// until the fix is made).
    Pipeline,
}

impl ErrorKind {
    /// What an error of this kind stops. Anything not known to pass by itself is definite:
    /// retrying a misunderstood error forever hides it.
    pub fn scope(self) -> Scope {
        match self {
            ErrorKind::SourceUnavailable | ErrorKind::BufferUnavailable | ErrorKind::TargetUnavailable => Scope::Retry,
            ErrorKind::Unsupported | ErrorKind::ValueRejected => Scope::Table,
            ErrorKind::Config
            | ErrorKind::SourceSetting
            | ErrorKind::SourcePermission
            | ErrorKind::BinlogPurged
            | ErrorKind::Decode
            | ErrorKind::Buffer
            | ErrorKind::TargetRejected
            | ErrorKind::Internal => Scope::Pipeline,
        }
    }

    /// Transient errors are retried with backoff; definite ones stop.
    pub fn is_transient(self) -> bool {
        self.scope() == Scope::Retry
    }

    /// A short name of the kind, as errors and metrics labels show it.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Config => "configuration error",
            ErrorKind::SourceSetting => "source setting",
            ErrorKind::SourcePermission => "source permission",
            ErrorKind::SourceUnavailable => "source unavailable",
            ErrorKind::BinlogPurged => "binlog purged",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Decode => "decode error",
            ErrorKind::Buffer => "buffer error",
            ErrorKind::BufferUnavailable => "buffer unavailable",
            ErrorKind::TargetUnavailable => "target unavailable",
            ErrorKind::TargetRejected => "target rejected",
            ErrorKind::ValueRejected => "value rejected",
            ErrorKind::Internal => "internal error",
        }
    }
}

/// The crate's error: a kind, a human explanation, an optional remedy, the table it
/// concerns when it concerns one, and the underlying cause.
pub struct Error {
    kind: ErrorKind,
    detail: String,
    hint: Option<String>,
    table: Option<TableRef>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with an explanation.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error { kind, detail: detail.into(), hint: None, table: None, source: None }
    }

    /// Attach the remedy the operator should apply.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Attach the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Name the table the error concerns.
    pub fn with_table(mut self, table: TableRef) -> Self {
        self.table = Some(table);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The table the error concerns, when it concerns one.
    pub fn table(&self) -> Option<&TableRef> {
        self.table.as_ref()
    }

    /// The table this error stops, when it stops one table and not the pipeline: a table or
    /// value the target cannot hold, or the source cannot decode.
    pub fn stops_table(&self) -> Option<&TableRef> {
        match self.kind.scope() {
            Scope::Table => self.table.as_ref(),
            Scope::Retry | Scope::Pipeline => None,
        }
    }

    /// The explanation without kind or hint.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The remedy, when one is known.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Shorthand for `kind().is_transient()`.
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// Prefix the detail with context, keeping kind, hint and cause.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.detail = format!("{context}: {}", self.detail);
        self
    }

    /// Classify a MySQL client error from the source side.
    pub(crate) fn source_mysql(err: mysql_async::Error, what: impl fmt::Display) -> Self {
        classify_mysql(err, Side::Source, what)
    }

    /// Classify a MySQL client error from the target side.
    pub(crate) fn target_mysql(err: mysql_async::Error, what: impl fmt::Display) -> Self {
        classify_mysql(err, Side::Target, what)
    }

    pub(crate) fn buffer(err: impl std::error::Error + Send + Sync + 'static, what: impl fmt::Display) -> Self {
        let detail = format!("{what}: {err}");
        Error::new(ErrorKind::Buffer, detail).with_source(err)
    }

    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, detail)
    }
}

#[derive(Clone, Copy)]
enum Side {
    Source,
    Target,
}

/// MySQL server error codes that retrying can fix.
const TRANSIENT_SERVER_CODES: &[u16] = &[
    1040, // ER_CON_COUNT_ERROR: too many connections
    1053, // ER_SERVER_SHUTDOWN
    1205, // ER_LOCK_WAIT_TIMEOUT
    1213, // ER_LOCK_DEADLOCK
    1412, // ER_TABLE_DEF_CHANGED: a table created or altered after the transaction's read view
    1927, // ER_CONNECTION_KILLED (MariaDB)
    2002, 2003, 2006, 2013, // client-side connection failures reported as server errors
    4031, // ER_CLIENT_INTERACTION_TIMEOUT
];

/// A value the target cannot hold (its column's type, range or check), which retrying will
/// not change: the row's table stops.
const VALUE_CODES: &[u16] = &[
    1048, // ER_BAD_NULL_ERROR: column cannot be null
    1264, // ER_WARN_DATA_OUT_OF_RANGE
    1265, // WARN_DATA_TRUNCATED
    1292, // ER_TRUNCATED_WRONG_VALUE: incorrect datetime/time value
    1366, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD: incorrect string/integer value
    1367, // ER_ILLEGAL_VALUE_FOR_TYPE
    1406, // ER_DATA_TOO_LONG
    1690, // ER_DATA_OUT_OF_RANGE
    3140, // ER_INVALID_JSON_TEXT (MySQL)
    3819, // ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
    4025, // ER_CONSTRAINT_FAILED (MariaDB: CHECK, JSON_VALID)
    4078, // ER_ILLEGAL_PARAMETER_DATA_TYPE_FOR_OPERATION (MariaDB: e.g. a bad INET6/UUID value)
];

/// Privilege errors: definite, and worth a grant hint.
const PERMISSION_CODES: &[u16] = &[
    1044, // ER_DBACCESS_DENIED_ERROR
    1045, // ER_ACCESS_DENIED_ERROR
    1142, // ER_TABLEACCESS_DENIED_ERROR
    1143, // ER_COLUMNACCESS_DENIED_ERROR
    1227, // ER_SPECIFIC_ACCESS_DENIED_ERROR
    1370, // ER_PROCACCESS_DENIED_ERROR
];

/// The TLS error inside a failed connection, if TLS is what failed (a certificate refused, a
/// handshake that broke). rustls reports through the I/O error of the handshake.
pub(crate) fn tls_failure(err: &mysql_async::Error) -> Option<&rustls::Error> {
    match err {
        mysql_async::Error::Io(mysql_async::IoError::Tls(mysql_async::TlsError::Tls(e))) => Some(e),
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io.get_ref().and_then(|e| e.downcast_ref()),
        _ => None,
    }
}

fn classify_mysql(err: mysql_async::Error, side: Side, what: impl fmt::Display) -> Error {
    use mysql_async::Error as E;
    let (unavailable, permission, rejected) = match side {
        Side::Source => (ErrorKind::SourceUnavailable, ErrorKind::SourcePermission, ErrorKind::SourceSetting),
        Side::Target => (ErrorKind::TargetUnavailable, ErrorKind::TargetRejected, ErrorKind::TargetRejected),
    };
    let kind = match &err {
        // A certificate refused is not fixed by waiting.
        E::Io(_) if tls_failure(&err).is_some() => rejected,
        E::Io(_) => unavailable,
        E::Driver(d) => match d {
            mysql_async::DriverError::ConnectionClosed
            | mysql_async::DriverError::PoolDisconnected
            | mysql_async::DriverError::PacketOutOfOrder => unavailable,
            _ => rejected,
        },
        E::Server(s) if TRANSIENT_SERVER_CODES.contains(&s.code) => unavailable,
        E::Server(s) if PERMISSION_CODES.contains(&s.code) => permission,
        E::Server(s) if s.code == 1236 => ErrorKind::BinlogPurged,
        E::Server(s) if matches!(side, Side::Target) && VALUE_CODES.contains(&s.code) => ErrorKind::ValueRejected,
        E::Server(_) => rejected,
        E::Url(_) => ErrorKind::Config,
        // mysql_async makes `Other` only from callbacks and conversions, never from I/O:
        // nothing shows it would pass by waiting, so it is definite (see `Scope`).
        E::Other(_) => rejected,
    };
    let denied = matches!(&err, E::Server(s) if PERMISSION_CODES.contains(&s.code));
    let login_refused = matches!(&err, E::Server(s) if s.code == 1045);
    let detail = format!("{what}: {err}");
    let mut out = Error::new(kind, detail);
    if login_refused {
        // The server refused the login itself: no grant fixes that.
        out = out.with_hint(match side {
            Side::Source => "check source.user and its password (source.password_env, source.password_file or BINFERRY_SOURCE_PASSWORD), and the host the user may connect from; a user created REQUIRE SSL or REQUIRE X509 also needs [source.tls] (with cert_file and key_file for X509)",
            Side::Target => "check sink.mysql.user and its password (sink.mysql.password_env, sink.mysql.password_file or BINFERRY_TARGET_PASSWORD), and the host the user may connect from; a user created REQUIRE SSL or REQUIRE X509 also needs [sink.mysql.tls] (with cert_file and key_file for X509)",
        });
    } else if denied {
        out = out.with_hint(match side {
            Side::Source => "grant the replication user REPLICATION SLAVE, BINLOG MONITOR (REPLICATION CLIENT on MySQL) ON *.* and SELECT on the replicated tables; `binferry check` lists what is missing",
            Side::Target => "grant the target user CREATE, ALTER, SELECT, INSERT, UPDATE, DELETE on the target database; `binferry check` lists what is missing",
        });
    }
    out.with_source(err)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.label(), self.detail)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  fix: {hint}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailability_is_transient() {
        assert!(ErrorKind::SourceUnavailable.is_transient());
        assert!(ErrorKind::TargetUnavailable.is_transient());
        assert!(ErrorKind::BufferUnavailable.is_transient());
        assert!(!ErrorKind::BinlogPurged.is_transient());
        assert!(!ErrorKind::SourcePermission.is_transient());
        assert!(!ErrorKind::Buffer.is_transient());
    }

    #[test]
    fn only_table_scoped_kinds_with_a_table_stop_a_table() {
        let t = TableRef::new("d", "t");
        assert_eq!(Error::new(ErrorKind::ValueRejected, "x").with_table(t.clone()).stops_table(), Some(&t));
        assert_eq!(Error::new(ErrorKind::Unsupported, "x").with_table(t.clone()).stops_table(), Some(&t));
        assert_eq!(Error::new(ErrorKind::ValueRejected, "x").stops_table(), None, "no table named");
        assert_eq!(Error::new(ErrorKind::TargetRejected, "x").with_table(t).stops_table(), None);
    }

    #[test]
    fn every_kind_has_one_scope() {
        use ErrorKind as K;
        let table = [
            (K::Config, Scope::Pipeline),
            (K::SourceSetting, Scope::Pipeline),
            (K::SourcePermission, Scope::Pipeline),
            (K::SourceUnavailable, Scope::Retry),
            (K::BinlogPurged, Scope::Pipeline),
            (K::Unsupported, Scope::Table),
            (K::Decode, Scope::Pipeline),
            (K::Buffer, Scope::Pipeline),
            (K::BufferUnavailable, Scope::Retry),
            (K::TargetUnavailable, Scope::Retry),
            (K::TargetRejected, Scope::Pipeline),
            (K::ValueRejected, Scope::Table),
            (K::Internal, Scope::Pipeline),
        ];
        for (kind, scope) in table {
            assert_eq!(kind.scope(), scope, "{kind:?}");
            assert_eq!(kind.is_transient(), scope == Scope::Retry, "{kind:?}");
        }
    }

    #[test]
    fn an_unknown_client_error_is_definite() {
        let e = Error::target_mysql(mysql_async::Error::Other("something new".into()), "writing");
        assert!(!e.is_transient(), "{e}");
        let e = Error::source_mysql(mysql_async::Error::Other("something new".into()), "reading");
        assert!(!e.is_transient(), "{e}");
    }

    #[test]
    fn display_has_kind_detail_and_hint() {
        let e = Error::new(ErrorKind::BinlogPurged, "binlog.000001:4 is gone").with_hint("resnapshot");
        assert_eq!(e.to_string(), "binlog purged: binlog.000001:4 is gone\n  fix: resnapshot");
    }
}
