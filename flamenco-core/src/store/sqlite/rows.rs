//! Column encoding: how model values are written to and read from SQLite, and how
//! rusqlite errors become [`StoreError`]s.
//!
//! * Ids are 12-byte BLOBs (SQLite compares BLOBs with `memcmp`, so id order is ObjectId
//!   order, i.e. creation order).
//! * Times are INTEGER milliseconds since the Unix epoch (MongoDB's precision, too).
//! * Lists and commands are JSON text.
//!
//! Decoding never panics: anything unexpected in a row is a [`StoreError::Corrupt`] naming
//! the column.

use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{ErrorCode, Row};

use crate::model::{Command, ObjectId, RequestedStatus, Task, TaskStatus, TaskUpdate, Worker};
use crate::store::{StoreError, StoreResult};

// ---- errors ----

/// Map a rusqlite error to the store's error kinds.
pub(super) fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match &e {
        E::SqliteFailure(f, msg) => {
            let text = msg.clone().unwrap_or_else(|| f.to_string());
            if let Some(advice) = unavailable_advice(f.code) {
                return StoreError::Unavailable(format!("{advice} (SQLite: {text})"));
            }
            match f.code {
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    StoreError::Corrupt(format!("SQLite: {text}"))
                }
                _ => StoreError::Other(format!("SQLite: {text}")),
            }
        }
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..)
        | E::InvalidColumnType(..) => StoreError::Corrupt(format!("SQLite: {e}")),
        _ => StoreError::Other(format!("SQLite: {e}")),
    }
}

/// What went wrong and what to do, for the SQLite errors that mean "the database cannot
/// be written right now" (they answer 503 with this text; nothing was written).
fn unavailable_advice(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::DiskFull => {
            "the disk holding the database is full; free disk space on the data directory's \
             file system (or move data_dir to a bigger disk), then retry"
        }
        ErrorCode::ReadOnly => {
            "the database is read-only; check the permissions of the data directory, \
             flamenco.sqlite and its -wal and -shm files, and that the file system is \
             mounted read-write"
        }
        ErrorCode::SystemIoFailure => {
            "the disk reported an I/O error on the database; check the disk and the file \
             system (the kernel log says more), then retry"
        }
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            "the database is locked by another process for longer than the busy timeout; \
             retry, and check for a long-running `flamenco` command or another program \
             holding flamenco.sqlite open"
        }
        ErrorCode::CannotOpen | ErrorCode::PermissionDenied => {
            "the database file cannot be opened; check that the data directory exists and \
             that this user may read and write it"
        }
        ErrorCode::OutOfMemory => "SQLite ran out of memory; retry, and check the host's memory",
        ErrorCode::FileLockingProtocolFailed => {
            "file locking failed on the database; keep data_dir on a local disk (not a \
             network file system)"
        }
        ErrorCode::NoLargeFileSupport => {
            "the database outgrew what the file system supports; move data_dir to a file \
             system with large-file support"
        }
        _ => return None,
    })
}

/// Is this a duplicate primary key or unique value?
pub(super) fn is_duplicate(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error(),
        Some(f) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// `?`-friendly conversion of rusqlite results.
pub(super) trait Db<T> {
    fn db(self) -> StoreResult<T>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self) -> StoreResult<T> {
        self.map_err(map_err)
    }
}

// ---- writing ----

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// `t` as it reads back from the database (whole milliseconds).
pub(super) fn as_stored(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms(t)).unwrap_or(t)
}

pub(super) fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

pub(super) fn blob(id: ObjectId) -> [u8; 12] {
    id.bytes()
}

pub(super) fn opt_blob(id: Option<ObjectId>) -> Option<[u8; 12]> {
    id.map(blob)
}

pub(super) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(format!("encoding JSON: {e}")))
}

// ---- reading ----

fn corrupt(row: &Row<'_>, idx: usize, what: impl std::fmt::Display) -> StoreError {
    let name = row.as_ref().column_name(idx).unwrap_or("?");
    StoreError::Corrupt(format!("column {name}: {what}"))
}

fn value<'a>(row: &'a Row<'_>, idx: usize) -> StoreResult<ValueRef<'a>> {
    row.get_ref(idx).db()
}

pub(super) fn col_opt_id(row: &Row<'_>, idx: usize) -> StoreResult<Option<ObjectId>> {
    match value(row, idx)? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(b) => match <[u8; 12]>::try_from(b) {
            Ok(bytes) => Ok(Some(ObjectId::from_bytes(bytes))),
            Err(_) => Err(corrupt(row, idx, format!("an id of {} bytes", b.len()))),
        },
        other => Err(corrupt(
            row,
            idx,
            format!("an id of type {}", other.data_type()),
        )),
    }
}

pub(super) fn col_id(row: &Row<'_>, idx: usize) -> StoreResult<ObjectId> {
    col_opt_id(row, idx)?.ok_or_else(|| corrupt(row, idx, "missing id"))
}

pub(super) fn col_opt_text<'a>(row: &'a Row<'_>, idx: usize) -> StoreResult<Option<&'a str>> {
    match value(row, idx)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .map(Some)
            .map_err(|e| corrupt(row, idx, e)),
        other => Err(corrupt(
            row,
            idx,
            format!("text expected, found {}", other.data_type()),
        )),
    }
}

pub(super) fn col_text(row: &Row<'_>, idx: usize) -> StoreResult<String> {
    Ok(col_opt_text(row, idx)?.unwrap_or_default().to_string())
}

pub(super) fn col_i64(row: &Row<'_>, idx: usize) -> StoreResult<i64> {
    match value(row, idx)? {
        ValueRef::Integer(i) => Ok(i),
        other => Err(corrupt(
            row,
            idx,
            format!("integer expected, found {}", other.data_type()),
        )),
    }
}

pub(super) fn col_i32(row: &Row<'_>, idx: usize) -> StoreResult<i32> {
    let i = col_i64(row, idx)?;
    i32::try_from(i).map_err(|_| corrupt(row, idx, format!("{i} is out of range")))
}

pub(super) fn col_opt_time(row: &Row<'_>, idx: usize) -> StoreResult<Option<DateTime<Utc>>> {
    match value(row, idx)? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(ms) => DateTime::from_timestamp_millis(ms)
            .map(Some)
            .ok_or_else(|| corrupt(row, idx, format!("time {ms} is out of range"))),
        other => Err(corrupt(
            row,
            idx,
            format!("time expected, found {}", other.data_type()),
        )),
    }
}

pub(super) fn col_time(row: &Row<'_>, idx: usize) -> StoreResult<DateTime<Utc>> {
    col_opt_time(row, idx)?.ok_or_else(|| corrupt(row, idx, "missing time"))
}

fn col_json<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: usize) -> StoreResult<T> {
    let text = col_opt_text(row, idx)?.unwrap_or("[]");
    serde_json::from_str(text).map_err(|e| corrupt(row, idx, e))
}

// ---- tasks ----

/// The columns [`task_from_row`] reads, for `SELECT … FROM tasks t`.
pub(super) const TASK_COLUMNS: &str = "t.id, t.etag, t.job, t.manager, t.project, t.user, \
    t.name, t.status, t.priority, t.job_priority, t.job_type, t.task_type, t.commands, \
    t.log, t.activity, t.worker, t.worker_id, t.last_worker_ping, t.last_updated, t.parents, \
    t.worker_tag";

/// Like [`TASK_COLUMNS`] but without the bulky fields (`commands`, `log` and `parents` read
/// as empty): what the status decisions of a protocol operation need. Such a task is only
/// saved with `tasks::save_changes`, which writes the columns that changed.
pub(super) const TASK_STATE_COLUMNS: &str = "t.id, t.etag, t.job, t.manager, t.project, \
    t.user, t.name, t.status, t.priority, t.job_priority, t.job_type, t.task_type, '[]', \
    '', t.activity, t.worker, t.worker_id, t.last_worker_ping, t.last_updated, x'', \
    t.worker_tag";

/// Parent ids packed as 12-byte blobs, in order.
pub(super) fn pack_ids(ids: &[ObjectId]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.bytes()).collect()
}

fn col_packed_ids(row: &Row<'_>, idx: usize) -> StoreResult<Vec<ObjectId>> {
    match value(row, idx)? {
        ValueRef::Null => Ok(Vec::new()),
        ValueRef::Blob(b) if b.len() % 12 == 0 => Ok(b
            .chunks_exact(12)
            .map(|chunk| {
                let mut bytes = [0u8; 12];
                bytes.copy_from_slice(chunk);
                ObjectId::from_bytes(bytes)
            })
            .collect()),
        ValueRef::Blob(b) => Err(corrupt(
            row,
            idx,
            format!("{} bytes of packed ids", b.len()),
        )),
        other => Err(corrupt(
            row,
            idx,
            format!("packed ids expected, found {}", other.data_type()),
        )),
    }
}

pub(super) fn task_from_row(row: &Row<'_>) -> StoreResult<Task> {
    let commands: Vec<Command> = col_json(row, 12)?;
    let parents = col_packed_ids(row, 19)?;
    Ok(Task {
        id: col_id(row, 0)?,
        etag: col_text(row, 1)?,
        job: col_opt_id(row, 2)?,
        manager: col_opt_id(row, 3)?,
        project: col_opt_id(row, 4)?,
        user: col_opt_id(row, 5)?,
        name: col_text(row, 6)?,
        status: TaskStatus::from_str_lossy(col_opt_text(row, 7)?.unwrap_or_default()),
        priority: col_i32(row, 8)?,
        job_priority: col_i32(row, 9)?,
        job_type: col_text(row, 10)?,
        task_type: col_text(row, 11)?,
        commands,
        log: col_text(row, 13)?,
        activity: col_text(row, 14)?,
        parents,
        worker: col_text(row, 15)?,
        worker_id: col_opt_id(row, 16)?,
        last_worker_ping: col_opt_time(row, 17)?,
        last_updated: col_opt_time(row, 18)?,
        worker_tag: Some(col_text(row, 20)?).filter(|t| !t.is_empty()),
    })
}

// ---- task updates ----

/// The columns [`update_from_row`] reads, for `SELECT … FROM task_updates`.
pub(super) const UPDATE_COLUMNS: &str = "id, task_id, task_status, received_on_manager, \
    activity, task_progress_percentage, current_command_idx, command_progress_percentage, \
    log, worker";

pub(super) fn update_from_row(row: &Row<'_>) -> StoreResult<TaskUpdate> {
    Ok(TaskUpdate {
        id: col_id(row, 0)?,
        task_id: col_id(row, 1)?,
        task_status: col_opt_text(row, 2)?.map(TaskStatus::from_str_lossy),
        received_on_manager: col_time(row, 3)?,
        activity: col_text(row, 4)?,
        task_progress_percentage: col_i64(row, 5)?,
        current_command_idx: col_i64(row, 6)?,
        command_progress_percentage: col_i64(row, 7)?,
        log: col_text(row, 8)?,
        worker: col_text(row, 9)?,
    })
}

// ---- workers ----

/// The columns [`worker_from_row`] reads, for `SELECT … FROM workers`.
pub(super) const WORKER_COLUMNS: &str = "id, hashed_secret, nickname, address, status, \
    platform, time_cost, supported_task_types, software, current_task, last_activity, \
    current_task_status, current_task_updated, status_requested, secret_sha256, tags";

pub(super) fn worker_from_row(row: &Row<'_>) -> StoreResult<Worker> {
    let status_requested = match col_opt_text(row, 13)? {
        None | Some("") => None,
        Some(s) => Some(
            RequestedStatus::parse(s)
                .ok_or_else(|| corrupt(row, 13, format!("unknown requested status {s:?}")))?,
        ),
    };
    Ok(Worker {
        id: col_id(row, 0)?,
        hashed_secret: col_text(row, 1)?,
        nickname: col_text(row, 2)?,
        address: col_text(row, 3)?,
        status: col_text(row, 4)?,
        platform: col_text(row, 5)?,
        time_cost: col_i64(row, 6)?,
        supported_task_types: col_json(row, 7)?,
        software: col_text(row, 8)?,
        current_task: col_opt_id(row, 9)?,
        last_activity: col_opt_time(row, 10)?,
        current_task_status: col_text(row, 11)?,
        current_task_updated: col_opt_time(row, 12)?,
        status_requested,
        secret_sha256: col_text(row, 14)?,
        tags: col_json(row, 15)?,
    })
}
