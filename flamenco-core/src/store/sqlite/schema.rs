//! Opening connections and the versioned schema.
//!
//! The schema version lives in `PRAGMA user_version`; version `n` is reached by applying
//! `MIGRATIONS[n-1]`. Migrations run at open, inside one `BEGIN IMMEDIATE` transaction, so
//! two processes opening a new database at the same time cannot both apply them. A
//! database with a newer version than [`LATEST_VERSION`] is refused.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::rows::Db;
use crate::store::{StoreError, StoreResult};

/// The schema version this program writes.
pub(super) const LATEST_VERSION: i64 = 13;

/// Version 1: the initial schema.
///
/// The claim query (see `tasks::next_schedulable`) walks `tasks_schedule` in order, so it
/// stops at the first schedulable task instead of sorting the queue. `task_type` is the
/// last column of that index so the type filter is checked without reading the row.
const V1: &str = "
CREATE TABLE tasks (
    id               BLOB PRIMARY KEY NOT NULL,
    etag             TEXT NOT NULL DEFAULT '',
    job              BLOB,
    manager          BLOB,
    project          BLOB,
    user             BLOB,
    name             TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    job_priority     INTEGER NOT NULL DEFAULT 0,
    job_type         TEXT NOT NULL DEFAULT '',
    task_type        TEXT NOT NULL DEFAULT '',
    commands         TEXT NOT NULL DEFAULT '[]',   -- JSON array of {name, settings}
    parents          BLOB NOT NULL DEFAULT x'',    -- the parent ids, 12 bytes each, in order
    log              TEXT NOT NULL DEFAULT '',
    activity         TEXT NOT NULL DEFAULT '',
    worker           TEXT NOT NULL DEFAULT '',
    worker_id        BLOB,
    last_worker_ping INTEGER,                      -- ms since the Unix epoch
    last_updated     INTEGER                       -- ms since the Unix epoch
);

CREATE INDEX tasks_schedule ON tasks (job_priority DESC, priority DESC, id, task_type)
    WHERE status IN ('queued', 'claimed-by-manager');
CREATE INDEX tasks_active_by_worker ON tasks (worker_id) WHERE status = 'active';
CREATE INDEX tasks_by_status ON tasks (status);
CREATE INDEX tasks_by_job ON tasks (job);

-- The parents again, one row each, for the claim's parent check (tasks.parents is what
-- is read back). Both are written only when a task is inserted.
CREATE TABLE task_parents (
    task_id   BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    idx       INTEGER NOT NULL,
    parent_id BLOB NOT NULL,
    PRIMARY KEY (task_id, idx)
) WITHOUT ROWID;

CREATE TABLE workers (
    id                   BLOB PRIMARY KEY NOT NULL,
    hashed_secret        TEXT NOT NULL DEFAULT '',
    nickname             TEXT NOT NULL DEFAULT '',
    address              TEXT NOT NULL DEFAULT '',
    status               TEXT NOT NULL DEFAULT '',
    platform             TEXT NOT NULL DEFAULT '',
    time_cost            INTEGER NOT NULL DEFAULT 0,
    supported_task_types TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
    software             TEXT NOT NULL DEFAULT '',
    current_task         BLOB,
    last_activity        INTEGER,
    current_task_status  TEXT NOT NULL DEFAULT '',
    current_task_updated INTEGER,
    status_requested     TEXT
);

-- The outbox. Arrival order is seq, not received_on_manager: a new row gets a seq
-- above every row present (max + 1), which is all the order needs.
CREATE TABLE task_updates (
    seq                         INTEGER PRIMARY KEY,
    id                          BLOB NOT NULL UNIQUE,
    task_id                     BLOB NOT NULL,
    task_status                 TEXT,
    received_on_manager         INTEGER NOT NULL,
    activity                    TEXT NOT NULL DEFAULT '',
    task_progress_percentage    INTEGER NOT NULL DEFAULT 0,
    current_command_idx         INTEGER NOT NULL DEFAULT 0,
    command_progress_percentage INTEGER NOT NULL DEFAULT 0,
    log                         TEXT NOT NULL DEFAULT '',
    worker                      TEXT NOT NULL DEFAULT ''
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

/// Version 2: find a task's children, so cleanup never removes a finished parent whose
/// children still wait (a missing parent would count as completed and unblock them).
const V2: &str = "
CREATE INDEX task_parents_by_parent ON task_parents (parent_id);
";

/// Version 3: outbox updates the job source never acknowledges are counted (`attempts`)
/// and then set aside (`set_aside_at`), so they stop blocking the updates behind them.
/// Pending updates are read through `task_updates_pending`; the cancel list looks up a
/// task's waiting updates through `task_updates_by_task`.
const V3: &str = "
ALTER TABLE task_updates ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_updates ADD COLUMN set_aside_at INTEGER;
CREATE INDEX task_updates_pending ON task_updates (seq) WHERE set_aside_at IS NULL;
CREATE INDEX task_updates_by_task ON task_updates (task_id);
";

/// Version 4: jobs (standalone mode), listed newest first through `jobs_by_created` (ids
/// made by different processes in the same second do not sort by time). A job's task counts are recounted after every
/// status change of one of its tasks, through `tasks_by_job_status` (which also serves
/// every lookup `tasks_by_job` did, so that one goes).
const V4: &str = "
CREATE TABLE jobs (
    id          BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    job_type    TEXT NOT NULL DEFAULT '',
    priority    INTEGER NOT NULL DEFAULT 50,
    status      TEXT NOT NULL,
    settings    TEXT NOT NULL DEFAULT '{}',   -- JSON object
    created     INTEGER NOT NULL,             -- ms since the Unix epoch
    updated     INTEGER NOT NULL,             -- ms since the Unix epoch
    task_counts TEXT NOT NULL DEFAULT '{}'    -- JSON object: task status -> count
);
CREATE INDEX jobs_by_status ON jobs (status);
CREATE INDEX jobs_by_created ON jobs (created, id);
CREATE INDEX tasks_by_job_status ON tasks (job, status);
DROP INDEX tasks_by_job;
";

/// Version 5: the metrics scrape counts tasks per (status, task type) through the covering
/// index `tasks_by_status_type` instead of scanning and sorting the table; it serves every
/// lookup `tasks_by_status` did, so that one goes.
const V5: &str = "
CREATE INDEX tasks_by_status_type ON tasks (status, task_type);
DROP INDEX tasks_by_status;
";

/// Version 6: the fast hash of a worker's secret next to its bcrypt hash (`auth::digest`,
/// docs/security.md "Worker secrets"); empty for workers that have none yet.
const V6: &str = "
ALTER TABLE workers ADD COLUMN secret_sha256 TEXT NOT NULL DEFAULT '';
";

/// Version 7: task logs (`logs.rs`, docs/storage.md "Task logs"): each row is the lines of
/// one update (a *chunk*), with their line numbers and byte offsets in the whole log.
/// Keyed so that, per task, head chunks and tail chunks are each in log order: dropping the
/// oldest tail chunks is a range delete. Not a foreign key of `tasks`: a download replaces
/// a task (delete + insert) and must keep its log; deletes remove logs explicitly.
pub(super) const V7: &str = "
CREATE TABLE task_log_chunks (
    task_id    BLOB NOT NULL,
    head       INTEGER NOT NULL,   -- 1: part of the head, kept for good; 0: tail
    start_byte INTEGER NOT NULL,   -- offset of the first line in the whole log
    first_line INTEGER NOT NULL,   -- number of the first line (the log's first is 0)
    line_count INTEGER NOT NULL,
    end_byte   INTEGER NOT NULL,   -- offset after the last line's newline
    text       TEXT NOT NULL,      -- the lines, joined with newlines
    PRIMARY KEY (task_id, head, start_byte)
) WITHOUT ROWID;
";

/// Version 8: task failure records (retries, `jobs::retry`, docs/jobs.md "Retries"): one
/// row per failed attempt. The claim skips a task whose record names the claiming worker
/// (a primary-key lookup per candidate), and counts a worker's failed tasks of one type
/// in one job through `task_failures_by_job` (the blocklist threshold). `soft-failed`
/// tasks are schedulable, so `tasks_schedule` now holds them too; it also carries `job`,
/// so the claim's blocklist check reads the index, not the row.
const V8: &str = "
CREATE TABLE task_failures (
    task_id   BLOB NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    worker_id BLOB NOT NULL,
    at        INTEGER NOT NULL,            -- ms since the Unix epoch
    worker    TEXT NOT NULL DEFAULT '',    -- the worker's nickname at the time
    job       BLOB,
    task_type TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (task_id, worker_id, at)
) WITHOUT ROWID;
CREATE INDEX task_failures_by_job ON task_failures (job, task_type, worker_id);
DROP INDEX tasks_schedule;
CREATE INDEX tasks_schedule ON tasks (job_priority DESC, priority DESC, id, task_type, job)
    WHERE status IN ('queued', 'claimed-by-manager', 'soft-failed');
";

/// Version 9: the webhook delivery queue (`webhooks.rs`, docs/webhooks.md): deliveries
/// waiting to be sent; `next_attempt_ms` is NULL once a delivery is given up.
const V9: &str = "
CREATE TABLE webhook_deliveries (
    id              BLOB PRIMARY KEY,
    url             TEXT NOT NULL,
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,     -- the exact JSON sent and signed
    created_ms      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,  -- failed attempts so far
    next_attempt_ms INTEGER,           -- NULL: given up
    last_error      TEXT,
    last_error_ms   INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms)
    WHERE next_attempt_ms IS NOT NULL;
";

/// Version 10: per-job blocklists (`jobs::retry`, docs/jobs.md "Blocklist"): a worker in
/// a job's list for a task type gets none of that job's tasks of that type. The claim
/// checks it with a primary-key lookup per candidate. A job the Manager failed because no
/// worker is left says why in `status_reason`.
const V10: &str = "
CREATE TABLE job_blocklist (
    job       BLOB NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    task_type TEXT NOT NULL,
    worker_id BLOB NOT NULL,
    worker    TEXT NOT NULL DEFAULT '',    -- the worker's nickname at the time
    added     INTEGER NOT NULL,            -- ms since the Unix epoch
    PRIMARY KEY (job, task_type, worker_id)
) WITHOUT ROWID;
ALTER TABLE jobs ADD COLUMN status_reason TEXT NOT NULL DEFAULT '';  -- why the Manager failed it
";

/// Version 11: worker tags (docs/jobs.md, "Worker tags"): a worker's `tags` (JSON array,
/// set by an admin), a job's `worker_tag` and its copy on each task (`''`: any worker).
/// `tasks_schedule` gains `worker_tag` as its FIRST column: the claim walks one range of
/// it per tag the worker may take (`''` and each of its tags), each in the scheduler's
/// order, so tasks of tags the worker lacks are never read (see `tasks::next_schedulable`).
const V11: &str = "
ALTER TABLE workers ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN worker_tag TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN worker_tag TEXT NOT NULL DEFAULT '';
DROP INDEX tasks_schedule;
CREATE INDEX tasks_schedule ON tasks (worker_tag, job_priority DESC, priority DESC, id, task_type, job)
    WHERE status IN ('queued', 'claimed-by-manager', 'soft-failed');
";

/// Version 12: the schedulable tasks again, by job (issue 16, blocklisted workers): in
/// each tag's range and job priority, one run per job and task type, in the claim's order.
/// A worker blocklisted for the job at the head of the queue skips that job's run with one
/// seek instead of walking it (`tasks::next_schedulable_past_blocks`).
const V12: &str = "
CREATE INDEX tasks_schedule_by_job
    ON tasks (worker_tag, job_priority DESC, job, task_type, priority DESC, id)
    WHERE status IN ('queued', 'claimed-by-manager', 'soft-failed');
";

/// Version 13: the finished tasks by the time they were last touched, for the cleanup
/// (`maintenance::delete_finished`). Without it, the cleanup walked every finished task
/// (`tasks_by_status`) to find those old enough, and its last batch of each run, the one
/// that finds no more, read all the finished tasks still too young: 570,000 rows in one
/// write transaction, 300–540 ms during which no worker's request was answered (the soak,
/// docs/performance.md). Partial: a task enters it once, when it finishes, so the pings
/// and updates of running tasks do not touch it.
const V13: &str = "
CREATE INDEX tasks_finished_by_age
    ON tasks (MAX(COALESCE(last_worker_ping, 0), COALESCE(last_updated, 0)))
    WHERE status IN ('completed', 'failed', 'canceled');
";

const MIGRATIONS: [&str; LATEST_VERSION as usize] =
    [V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12, V13];

/// Per-connection settings.
#[derive(Clone, Debug)]
pub(super) struct ConnConfig {
    /// `OFF`, `NORMAL`, `FULL` or `EXTRA`.
    pub synchronous: &'static str,
    pub busy_timeout: Duration,
}

/// Page cache of the write connection, in KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// Page cache of each read connection, in KiB.
const READER_CACHE_KIB: i64 = 16 * 1024;
/// Reads go through a memory map of up to this many bytes of the database file.
const MMAP_BYTES: i64 = 1 << 30;
/// Checkpoint the WAL into the database file after this many pages (~4 MiB of 4 KiB
/// pages, SQLite's default), so the WAL stays small next to a small data disk: at 10,000
/// pages (~40 MiB) a WAL filled an 8 MB data disk in 1.4 s. A page written many times
/// between checkpoints is copied once; docs/storage.md has the throughput cost.
pub(super) const WAL_AUTOCHECKPOINT_PAGES: i64 = 1_000;
/// When the WAL is rewound after a checkpoint, it is truncated back to this size (a burst
/// that grew it, e.g. one large transaction, does not keep its space). Together: the WAL
/// peaks at about [`WAL_AUTOCHECKPOINT_PAGES`] pages plus the last write batch, and
/// between bursts holds at most this much (docs/storage.md, "Disk space").
pub(super) const WAL_SIZE_LIMIT_BYTES: i64 = 4 << 20;

fn configure(conn: &Connection, cfg: &ConnConfig, cache_kib: i64) -> StoreResult<()> {
    conn.busy_timeout(cfg.busy_timeout).db()?;
    conn.pragma_update(None, "synchronous", cfg.synchronous)
        .db()?;
    conn.pragma_update(None, "foreign_keys", "ON").db()?;
    conn.pragma_update(None, "temp_store", "MEMORY").db()?;
    conn.pragma_update(None, "cache_size", -cache_kib).db()?;
    conn.pragma_update(None, "mmap_size", MMAP_BYTES).db()?;
    // Plans must not depend on bound values: otherwise SQLite re-prepares a statement
    // whenever its parameters change (it compares `worker_id = ?1` with the literals of the
    // partial index `tasks_schedule`), which cost ~15% of the writer's time.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .db()?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(())
}

/// Open (creating if needed) the database for writing: WAL mode, then migrations.
pub(super) fn open_writer(path: &Path, cfg: &ConnConfig) -> StoreResult<Connection> {
    let mut conn = Connection::open(path).map_err(|e| open_error(path, e))?;
    configure(&conn, cfg, WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .db()?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)
        .db()?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .db()?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            path = %path.display(),
            journal_mode = %mode,
            "SQLite refused WAL mode; readers will block writers"
        );
    }
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Open a read-only connection to an existing database.
pub(super) fn open_reader(path: &Path, cfg: &ConnConfig) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    configure(&conn, cfg, READER_CACHE_KIB)?;
    conn.pragma_update(None, "query_only", "ON").db()?;
    Ok(conn)
}

fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    match super::rows::map_err(e) {
        StoreError::Unavailable(m) => {
            StoreError::Unavailable(format!("cannot open {}: {m}", path.display()))
        }
        StoreError::Corrupt(m) => StoreError::Corrupt(format!("{}: {m}", path.display())),
        StoreError::Other(m) => StoreError::Other(format!("cannot open {}: {m}", path.display())),
        other => other,
    }
}

fn user_version(conn: &Connection) -> StoreResult<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .db()
}

fn check_version(version: i64, path: &Path) -> StoreResult<()> {
    if version > LATEST_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the database {} has schema version {version}, but this program only knows \
             versions up to {LATEST_VERSION}; it was written by a newer Flamenco Manager, \
             so use that (or a newer) version",
            path.display()
        )));
    }
    if version < 0 {
        return Err(StoreError::Corrupt(format!(
            "the database {} has an invalid schema version {version}",
            path.display()
        )));
    }
    Ok(())
}

/// Bring the schema up to [`LATEST_VERSION`].
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> StoreResult<()> {
    let version = user_version(conn)?;
    check_version(version, path)?;
    if version == LATEST_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db()?;
    // Another process may have migrated while we waited for the write lock.
    let version = user_version(&tx)?;
    check_version(version, path)?;
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(migration).map_err(|e| {
            StoreError::Other(format!(
                "migrating {} to schema version {}: {}",
                path.display(),
                i + 1,
                super::rows::map_err(e)
            ))
        })?;
    }
    tx.pragma_update(None, "user_version", LATEST_VERSION)
        .db()?;
    tx.commit().db()?;
    if version > 0 {
        tracing::info!(
            path = %path.display(),
            from = version,
            to = LATEST_VERSION,
            "migrated the database schema"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by a version-5 program: its workers get an empty
    /// `secret_sha256` (bcrypt decides until their first login upgrades them).
    #[test]
    fn v6_adds_an_empty_secret_sha256_to_existing_workers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v5.sqlite");
        let mut conn = Connection::open(&path).expect("open");
        for migration in &MIGRATIONS[..5] {
            conn.execute_batch(migration).expect("v1..v5");
        }
        conn.pragma_update(None, "user_version", 5)
            .expect("version");
        conn.execute(
            "INSERT INTO workers (id, hashed_secret) VALUES (x'0102030405060708090a0b0c', '$2a$10$x')",
            [],
        )
        .expect("a v5 worker");
        migrate(&mut conn, &path).expect("migrate");
        assert_eq!(user_version(&conn).expect("version"), LATEST_VERSION);
        let (hashed, fast): (String, String) = conn
            .query_row(
                "SELECT hashed_secret, secret_sha256 FROM workers",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the worker");
        assert_eq!((hashed.as_str(), fast.as_str()), ("$2a$10$x", ""));
    }
}
