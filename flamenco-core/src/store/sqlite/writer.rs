//! The writer thread: the only place this process writes to the database.
//!
//! Jobs (closures over the write connection) arrive through a channel. The thread takes
//! one job, `BEGIN IMMEDIATE`, runs it, then runs whatever else is waiting by then (up to
//! `max_batch` jobs in all) in the same transaction ("group commit"). Every job after the
//! first runs inside its own `SAVEPOINT`, so a failing job rolls back only itself; if the
//! first fails, nothing else has run and the transaction is rolled back.
//! Only after `COMMIT` succeeded are the replies sent: a caller that hears success knows
//! its write is committed. If the commit fails, every job of the batch gets the error.
//!
//! `close` drains the jobs queued before it, checkpoints the WAL into the database file
//! (and truncates it), then closes the connection; later jobs get
//! [`StoreError::Unavailable`]. The checkpoint is explicit because SQLite's own, when the
//! last connection closes, fails silently: on a full disk the WAL stays behind without a
//! word. `close` returns its error instead.
//!
//! A few jobs must run outside any transaction (connection settings such as
//! `PRAGMA query_only`, which `BEGIN IMMEDIATE` itself would trip over): they run alone,
//! between two batches ([`Writer::run_outside_transaction`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode};
use tokio::sync::oneshot;

use super::disk::{human_bytes, Disk};

use super::rows::Db;
use crate::store::{StoreError, StoreResult};

/// A queued job, type-erased.
trait PendingJob: Send {
    /// Run inside the open transaction; false when the job failed.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Send the reply, given how the transaction ended.
    fn finish(self: Box<Self>, commit: &StoreResult<()>);
    /// False for a job that must run alone, outside any transaction.
    fn in_transaction(&self) -> bool;
    /// The job's own error, once it ran and failed.
    fn error_text(&self) -> Option<String>;
}

struct Job<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
    transactional: bool,
}

impl<T, F> PendingJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return self.result.as_ref().is_some_and(|r| r.is_ok());
        };
        let result = catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(StoreError::Other(format!("a store write panicked: {msg}")))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: &StoreResult<()>) {
        let result = match (self.result, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(e.clone()),
            (None, Ok(())) => Err(StoreError::Other("the store write did not run".into())),
        };
        // The caller may have gone away; its write is committed anyway.
        let _ = self.reply.send(result);
    }

    fn in_transaction(&self) -> bool {
        self.transactional
    }

    fn error_text(&self) -> Option<String> {
        match &self.result {
            Some(Err(
                StoreError::Unavailable(m) | StoreError::Corrupt(m) | StoreError::Other(m),
            )) => Some(m.clone()),
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    }
}

pub(super) fn closed_error() -> StoreError {
    StoreError::Unavailable("the SQLite store is closed".into())
}

enum Msg {
    Job(Box<dyn PendingJob>),
    Close(oneshot::Sender<StoreResult<()>>),
}

/// Handle to the writer thread.
pub(super) struct Writer {
    tx: mpsc::Sender<Msg>,
    closed: AtomicBool,
}

impl Writer {
    /// Start the thread; it owns `conn` from now on.
    pub(super) fn start(conn: Connection, max_batch: usize) -> StoreResult<Writer> {
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("flamenco-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, max_batch.max(1)))
            .map_err(|e| StoreError::Other(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Writer {
            tx,
            closed: AtomicBool::new(false),
        })
    }

    /// Run `work` in a write transaction; the answer comes after the commit.
    pub(super) async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.send(work, true).await
    }

    /// Run `work` on the write connection alone, outside any transaction (connection
    /// settings); it runs after the jobs queued before it.
    pub(super) async fn run_outside_transaction<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.send(work, false).await
    }

    async fn send<T, F>(&self, work: F, transactional: bool) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Job {
            work: Some(work),
            result: None,
            reply,
            transactional,
        });
        self.tx.send(Msg::Job(job)).map_err(|_| closed_error())?;
        answer.await.map_err(|_| closed_error())?
    }

    /// Drain queued jobs, checkpoint the WAL, then stop the thread and close the
    /// connection. The error is the final checkpoint's (the WAL, with every committed
    /// change, stays for the next start). Idempotent: later calls return `Ok`.
    pub(super) async fn close(&self) -> StoreResult<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (done, finished) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).is_ok() {
            return finished.await.unwrap_or(Ok(()));
        }
        Ok(())
    }
}

/// The receiving end, as the writer thread sees it.
struct Inbox {
    rx: mpsc::Receiver<Msg>,
    /// Set once the close request arrived: take no more jobs.
    closing: Option<oneshot::Sender<StoreResult<()>>>,
    /// Every handle is gone.
    orphaned: bool,
    /// A job that arrived during a batch but must run alone: it is next.
    held: Option<Box<dyn PendingJob>>,
}

impl Inbox {
    /// Wait for the next job.
    fn wait(&mut self) -> Option<Box<dyn PendingJob>> {
        if self.closing.is_some() || self.orphaned {
            return None;
        }
        if let Some(job) = self.held.take() {
            return Some(job);
        }
        match self.rx.recv() {
            Ok(Msg::Job(job)) => Some(job),
            Ok(Msg::Close(done)) => {
                self.closing = Some(done);
                None
            }
            Err(_) => {
                self.orphaned = true;
                None
            }
        }
    }

    /// A job that is already waiting and may join the open transaction, if any.
    fn waiting(&mut self) -> Option<Box<dyn PendingJob>> {
        if self.closing.is_some() || self.held.is_some() {
            return None;
        }
        match self.rx.try_recv() {
            Ok(Msg::Job(job)) if !job.in_transaction() => {
                self.held = Some(job);
                None
            }
            Ok(Msg::Job(job)) => Some(job),
            Ok(Msg::Close(done)) => {
                self.closing = Some(done);
                None
            }
            Err(_) => None,
        }
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Msg>, max_batch: usize) {
    let mut inbox = Inbox {
        rx,
        closing: None,
        orphaned: false,
        held: None,
    };
    let mut batch: Vec<Box<dyn PendingJob>> = Vec::with_capacity(max_batch);
    while let Some(mut first) = inbox.wait() {
        if !first.in_transaction() {
            first.run(&conn);
            first.finish(&Ok(()));
            continue;
        }
        batch.push(first);
        run_batch(&conn, &mut batch, &mut inbox, max_batch);
    }
    // Jobs sent after the close request are dropped with the receiver; their callers
    // see "closed".
    let Inbox {
        rx, closing, held, ..
    } = inbox;
    drop(held);
    drop(rx);
    let checkpoint = final_checkpoint(&conn);
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the SQLite write connection");
    }
    if let Some(done) = closing {
        let _ = done.send(checkpoint);
    }
}

/// Copy the whole WAL into the database file and truncate it. Another process still
/// reading (a `flamenco` command) only makes it partial, which is not an error: the next
/// opener checkpoints the rest. An error (a full disk, an I/O error) leaves the WAL, and
/// every committed change in it, for the next start.
pub(super) fn final_checkpoint(conn: &Connection) -> StoreResult<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(|e| checkpoint_error(conn.path().filter(|p| !p.is_empty()).map(Path::new), e))
}

/// One message that says what failed, where (the database, the data directory, the disk
/// and how full it is), that nothing is lost, and what to do.
fn checkpoint_error(db: Option<&Path>, e: rusqlite::Error) -> StoreError {
    let Some(db) = db else {
        return super::rows::map_err(e);
    };
    let data_dir = db.parent().unwrap_or(db);
    let disk = Disk::of(data_dir);
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let wal_size = std::fs::metadata(&wal)
        .map(|m| human_bytes(m.len()))
        .unwrap_or_else(|_| "size unknown".into());
    let (what, advice) = if e.sqlite_error_code() == Some(ErrorCode::DiskFull) {
        (
            format!(
                "the disk holding data_dir {} is full: {}",
                data_dir.display(),
                disk.describe()
            ),
            format!(
                "Free space on {} (or move data_dir to a bigger disk; docs/storage.md says \
                 how much it needs), then start the Manager again",
                disk.mount_point.as_deref().unwrap_or(data_dir).display()
            ),
        )
    } else {
        (
            format!(
                "{e} (data_dir {}, on {})",
                data_dir.display(),
                disk.describe()
            ),
            "Check the disk and the file system (the kernel log says more), then start the \
             Manager again"
                .to_string(),
        )
    };
    StoreError::Unavailable(format!(
        "the final checkpoint of {} failed: {what}. Nothing acknowledged is lost: {} ({wal_size}) \
         keeps every committed change, and the next start applies it. {advice}",
        db.display(),
        wal.display()
    ))
}

/// Run one statement that answers no rows (`BEGIN`, `COMMIT`, …), prepared once.
pub(super) fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql).db()?.execute([]).db().map(|_| ())
}

/// Run `batch` and the jobs that arrive meanwhile (up to `max_batch` in all) in one
/// transaction, then reply to every job.
fn run_batch(
    conn: &Connection,
    batch: &mut Vec<Box<dyn PendingJob>>,
    inbox: &mut Inbox,
    max_batch: usize,
) {
    let outcome = run_in_transaction(conn, batch, inbox, max_batch);
    if outcome.is_err() && !conn.is_autocommit() {
        if let Err(e) = exec(conn, "ROLLBACK") {
            tracing::error!(error = %e, "rolling back a failed SQLite batch");
        }
    }
    for job in batch.drain(..) {
        job.finish(&outcome);
    }
}

fn run_in_transaction(
    conn: &Connection,
    batch: &mut Vec<Box<dyn PendingJob>>,
    inbox: &mut Inbox,
    max_batch: usize,
) -> StoreResult<()> {
    exec(conn, "BEGIN IMMEDIATE")?;
    // The first job runs without a savepoint: if it fails, nothing else has run yet and
    // the whole transaction is rolled back.
    if !batch[0].run(conn) {
        if !conn.is_autocommit() {
            exec(conn, "ROLLBACK")?;
        }
        return Ok(());
    }
    lost_transaction(conn, None)?;
    let mut next = 1;
    loop {
        if next == batch.len() {
            if batch.len() >= max_batch {
                break;
            }
            match inbox.waiting() {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        let job = &mut batch[next];
        next += 1;
        exec(conn, "SAVEPOINT job")?;
        let ok = job.run(conn);
        lost_transaction(conn, job.error_text())?;
        if !ok {
            exec(conn, "ROLLBACK TO job")?;
        }
        exec(conn, "RELEASE job")?;
    }
    exec(conn, "COMMIT")
}

/// SQLite rolls the whole transaction back by itself on some errors (disk full, I/O);
/// the remaining jobs must not then run in autocommit mode. `cause` is the error of the
/// job that was running, which every job of the batch then hears.
fn lost_transaction(conn: &Connection, cause: Option<String>) -> StoreResult<()> {
    if conn.is_autocommit() {
        return Err(StoreError::Unavailable(match cause {
            Some(cause) => format!("SQLite aborted the write transaction: {cause}"),
            None => "SQLite aborted the write transaction; retry".into(),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join("w.sqlite")).expect("open");
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (k INTEGER PRIMARY KEY);")
            .expect("schema");
        (dir, Writer::start(conn, 256).expect("start"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn failing_jobs_roll_back_only_themselves() {
        let (_dir, writer) = writer();
        let writer = std::sync::Arc::new(writer);
        let mut handles = Vec::new();
        for i in 0..200i64 {
            let w = writer.clone();
            handles.push(tokio::spawn(async move {
                w.run(move |c| {
                    c.execute("INSERT INTO t (k) VALUES (?1)", [i]).db()?;
                    if i % 3 == 0 {
                        return Err(StoreError::Other(format!("job {i} fails")));
                    }
                    if i % 7 == 0 {
                        panic!("job {i} panics");
                    }
                    Ok(i)
                })
                .await
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            let r = h.await.expect("join");
            let i = i as i64;
            assert_eq!(r.is_ok(), i % 3 != 0 && i % 7 != 0, "job {i}: {r:?}");
        }
        let keys: Vec<i64> = writer
            .run(|c| {
                let mut st = c.prepare("SELECT k FROM t ORDER BY k").db()?;
                let rows = st.query_map([], |r| r.get(0)).db()?;
                rows.collect::<rusqlite::Result<Vec<i64>>>().db()
            })
            .await
            .expect("read");
        let expected: Vec<i64> = (0..200).filter(|i| i % 3 != 0 && i % 7 != 0).collect();
        assert_eq!(keys, expected);
        writer.close().await.expect("close");
        assert!(matches!(
            writer.run(|_| Ok(())).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn jobs_outside_transactions_run_alone_between_batches() {
        let (_dir, writer) = writer();
        let writer = std::sync::Arc::new(writer);
        let mut handles = Vec::new();
        for i in 0..300i64 {
            let w = writer.clone();
            handles.push(tokio::spawn(async move {
                if i % 50 == 25 {
                    // Outside a transaction, the connection is in autocommit mode.
                    w.run_outside_transaction(|c| Ok(c.is_autocommit())).await
                } else {
                    w.run(move |c| {
                        c.execute("INSERT INTO t (k) VALUES (?1)", [i]).db()?;
                        Ok(!c.is_autocommit())
                    })
                    .await
                }
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            assert!(h.await.expect("join").expect("job"), "job {i}");
        }
        let n: i64 = writer
            .run(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).db())
            .await
            .expect("count");
        assert_eq!(n, 294);
        writer.close().await.expect("close");
    }
}
