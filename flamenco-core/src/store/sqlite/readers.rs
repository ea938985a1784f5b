//! A small pool of read-only connections for pure reads (get, list, count, peek,
//! settings), used through `tokio::task::spawn_blocking` ([`ReadPool::run`]) or, for the
//! point reads of the worker protocol, on the calling thread ([`ReadPool::run_here`];
//! [`ReadPool::run_here_in_transaction`] when a read has several statements).
//!
//! In WAL mode readers never wait for the writer; they see the last committed state. As
//! the writer answers only after its commit, a caller always reads its own writes.
//! Connections are opened lazily, at most `size` at a time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::schema::{self, ConnConfig};
use super::writer::{closed_error, exec};
use crate::store::{StoreError, StoreResult};

pub(super) struct ReadPool {
    path: PathBuf,
    config: ConnConfig,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    closed: AtomicBool,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf, config: ConnConfig, size: usize) -> ReadPool {
        ReadPool {
            path,
            config,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
            closed: AtomicBool::new(false),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Open one connection now, so that a broken database shows at open time.
    pub(super) fn warm_up(&self) -> StoreResult<()> {
        let conn = schema::open_reader(&self.path, &self.config)?;
        self.idle().push(conn);
        Ok(())
    }

    /// Run `read` on a pooled connection in the blocking thread pool.
    pub(super) async fn run<T, F>(&self, read: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|_| closed_error())?;
        if self.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        let pooled = self.idle().pop();
        let path = self.path.clone();
        let config = self.config.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match pooled {
                Some(conn) => conn,
                None => match schema::open_reader(&path, &config) {
                    Ok(conn) => conn,
                    Err(e) => return (None, Err(e)),
                },
            };
            let result = read(&conn);
            (Some(conn), result)
        })
        .await
        .map_err(|e| StoreError::Other(format!("a store read failed: {e}")))?;
        if let Some(conn) = conn {
            if !self.closed.load(Ordering::Acquire) {
                self.idle().push(conn);
            }
        }
        result
    }

    /// Run `read` on a pooled connection on the calling (async) thread, without the
    /// hand-off to the blocking pool and back (two thread wake-ups, about as much CPU as
    /// the read itself: docs/performance.md). Only for reads that are bounded by an
    /// index: a primary-key lookup or the first entries of an index range, a few
    /// microseconds, never a scan. In WAL mode a reader does not wait for the writer, so
    /// the async thread is not held behind a write.
    pub(super) async fn run_here<T, F>(&self, read: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T>,
    {
        let _permit = self.permits.acquire().await.map_err(|_| closed_error())?;
        if self.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        let pooled = self.idle().pop();
        let conn = match pooled {
            Some(conn) => conn,
            // Rare (the pool warms up at open; connections are kept): opening is a few
            // file operations, still bounded.
            None => schema::open_reader(&self.path, &self.config)?,
        };
        let result = read(&conn);
        if !self.closed.load(Ordering::Acquire) {
            self.idle().push(conn);
        }
        result
    }

    /// [`ReadPool::run_here`] with the read's statements in one read transaction: one
    /// snapshot, and one WAL read lock taken and released, instead of one per statement
    /// (in autocommit mode each statement is a transaction of its own, and taking the
    /// read lock is a good part of a point read's cost: docs/performance.md). The
    /// transaction always ends before the connection goes back to the pool, so no
    /// snapshot is kept that would hold back checkpoints.
    pub(super) async fn run_here_in_transaction<T, F>(&self, read: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T>,
    {
        self.run_here(|conn| {
            exec(conn, "BEGIN")?;
            let result = read(conn);
            let ended = exec(conn, "COMMIT");
            if ended.is_err() && !conn.is_autocommit() {
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %e, "ending a read transaction");
                }
            }
            let value = result?;
            ended?;
            Ok(value)
        })
        .await
    }

    /// Close the idle connections; reads from now on fail with `Unavailable`.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        self.idle().clear();
    }
}
