//! Driver errors as [`StoreError`]s.
//!
//! * The database cannot be reached or cannot take writes right now (server selection
//!   timed out, network and pool errors, "not primary", "shutdown in progress", a write
//!   concern that timed out) → [`StoreError::Unavailable`] with a short reason, which the
//!   HTTP layer turns into a 503 with `Retry-After`.
//! * A duplicate key → [`StoreError::Duplicate`], for callers that know the id (see
//!   [`duplicate_index`]); otherwise `Other`.
//! * A document the driver cannot decode → [`StoreError::Corrupt`].
//! * Anything else → [`StoreError::Other`].

use mongodb::error::{Error, ErrorKind, WriteFailure};

use crate::store::{StoreError, StoreResult};

/// MongoDB's duplicate key codes.
const DUPLICATE_KEY: [i32; 3] = [11000, 11001, 12582];

/// Server error codes that mean "not now": the node is unreachable, shutting down, not (or
/// no longer) the primary, or a write concern could not be met in time.
const UNAVAILABLE_CODES: [i32; 17] = [
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed (wtimeout)
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10058, // LegacyNotPrimary
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    134,   // ReadConcernMajorityNotAvailableYet
    100,   // UnsatisfiableWriteConcern
];

/// Map a driver error to the store's error kinds.
pub(super) fn map_err(e: Error) -> StoreError {
    if let Some(code) = server_code(&e) {
        if UNAVAILABLE_CODES.contains(&code) {
            return StoreError::Unavailable(format!("MongoDB: {}", reason(&e)));
        }
        if DUPLICATE_KEY.contains(&code) {
            return StoreError::Other(format!("MongoDB: duplicate key: {}", reason(&e)));
        }
    }
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => StoreError::Unavailable(format!("MongoDB: {}", reason(&e))),
        ErrorKind::BsonDeserialization(_)
        | ErrorKind::Bson(_)
        | ErrorKind::InvalidResponse { .. } => {
            StoreError::Corrupt(format!("MongoDB: {}", reason(&e)))
        }
        _ if e.contains_label("RetryableWriteError") => {
            StoreError::Unavailable(format!("MongoDB: {}", reason(&e)))
        }
        _ => StoreError::Other(format!("MongoDB: {}", reason(&e))),
    }
}

/// A write error or write concern error found in a command's reply (`code`, `errmsg`),
/// for commands sent with `run_command` (`super::batch`), which the driver does not
/// turn into errors itself.
pub(super) fn reply_error(error: &mongodb::bson::Document) -> StoreError {
    let code = match error.get("code") {
        Some(mongodb::bson::Bson::Int32(c)) => *c,
        Some(mongodb::bson::Bson::Int64(c)) => i32::try_from(*c).unwrap_or(-1),
        _ => -1,
    };
    let message = error.get_str("errmsg").unwrap_or("no message");
    if UNAVAILABLE_CODES.contains(&code) {
        StoreError::Unavailable(format!("MongoDB: {message} ({code})"))
    } else {
        StoreError::Other(format!("MongoDB: {message} ({code})"))
    }
}

/// The code the server gave, for errors that come from the server.
fn server_code(e: &Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first())
            .map(|w| w.code)
            .or_else(|| m.write_concern_error.as_ref().map(|w| w.code)),
        _ => None,
    }
}

/// For a duplicate key error: the index of the offending document in the batch (0 for a
/// single-document write). `None` for any other error.
pub(super) fn duplicate_index(e: &Error) -> Option<usize> {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) if DUPLICATE_KEY.contains(&w.code) => Some(0),
        ErrorKind::Command(c) if DUPLICATE_KEY.contains(&c.code) => Some(0),
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()?
            .iter()
            .find(|w| DUPLICATE_KEY.contains(&w.code))
            .map(|w| w.index),
        _ => None,
    }
}

/// For an unordered `insert_many` that failed only for some documents: the indices of
/// those documents, each with whether it failed as a duplicate key (the document is
/// already in). `None` when the error names no document (a lost connection, a write
/// concern not met): then nothing is known of any of them.
pub(super) fn failed_documents(e: &Error) -> Option<Vec<(usize, bool)>> {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(m) if m.write_concern_error.is_none() => {
            let failed: Vec<(usize, bool)> = m
                .write_errors
                .as_ref()?
                .iter()
                .map(|w| (w.index, DUPLICATE_KEY.contains(&w.code)))
                .collect();
            (!failed.is_empty()).then_some(failed)
        }
        _ => None,
    }
}

/// A one-line reason, without the driver's topology dump.
pub(super) fn reason(e: &Error) -> String {
    match e.kind.as_ref() {
        ErrorKind::ServerSelection { message, .. } => {
            // The driver's message lists every server with its last error; keep that
            // error ("Connection refused (os error 111)", …) when there is one.
            let detail = message
                .split("Error: ")
                .nth(1)
                .map(|rest| rest.split(", labels").next().unwrap_or(rest))
                .map(|rest| rest.trim_start_matches("Kind: ").trim().to_string());
            match detail {
                Some(d) if !d.is_empty() => format!("no server available ({d})"),
                _ => "no server available (server selection timed out)".to_string(),
            }
        }
        ErrorKind::Io(io) => format!("connection error: {io}"),
        ErrorKind::ConnectionPoolCleared { message, .. } => format!("connection lost: {message}"),
        ErrorKind::DnsResolve { message, .. } => format!("DNS resolution failed: {message}"),
        ErrorKind::Shutdown => "the client was shut down".to_string(),
        ErrorKind::Command(c) => format!("{} ({} {})", c.message, c.code, c.code_name),
        ErrorKind::Write(WriteFailure::WriteError(w)) => format!("{} ({})", w.message, w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
            format!("write concern: {} ({} {})", w.message, w.code, w.code_name)
        }
        ErrorKind::InsertMany(m) => {
            let first = m
                .write_errors
                .as_ref()
                .and_then(|errors| errors.first())
                .map(|w| format!("{} ({})", w.message, w.code));
            let wc = m
                .write_concern_error
                .as_ref()
                .map(|w| format!("write concern: {} ({})", w.message, w.code));
            first.or(wc).unwrap_or_else(|| e.to_string())
        }
        ErrorKind::Authentication { message, .. } => format!("authentication failed: {message}"),
        _ => e.to_string(),
    }
}

/// `?`-friendly conversion of driver results.
pub(super) trait Mongo<T> {
    fn db(self) -> StoreResult<T>;
}

impl<T> Mongo<T> for mongodb::error::Result<T> {
    fn db(self) -> StoreResult<T> {
        self.map_err(map_err)
    }
}
