//! Store faults on purpose, and the check that nothing broke: what the fault tests
//! (docs/operations.md, "Fault tolerance") use to make the embedded store fail the way a
//! full disk or a read-only database does, without filling a disk or needing a read-only
//! mount (the tests run as root, where file permissions do not stop writes).
//!
//! * A full disk is SQLite's own `SQLITE_FULL`: `PRAGMA max_page_count` is lowered to
//!   the database's current size, so any write that needs a new page fails exactly as it
//!   does when the file system has no space left.
//! * A read-only database is `PRAGMA query_only`: every write transaction fails with
//!   `SQLITE_READONLY`, as on a read-only file or mount.
//!
//! Both act on the write connection only and are undone by [`SimulatedFault`] `None`.

use rusqlite::Connection;

use super::rows::Db;
use crate::store::StoreResult;

/// A failure [`super::SqliteStore::simulate_fault`] makes the write connection show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimulatedFault {
    /// Writes that need space fail with `SQLITE_FULL` ("database or disk is full").
    DiskFull,
    /// Every write fails with `SQLITE_READONLY`.
    ReadOnly,
}

/// SQLite's largest `max_page_count`; asking for it restores "no limit".
const NO_PAGE_LIMIT: i64 = 4_294_967_294;

fn set_max_page_count(conn: &Connection, pages: i64) -> StoreResult<i64> {
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
        r.get(0)
    })
    .db()
}

/// Make the write connection fail like `fault`, or work normally again (`None`). Runs
/// outside any transaction.
pub(super) fn apply(conn: &Connection, fault: Option<SimulatedFault>) -> StoreResult<()> {
    conn.pragma_update(None, "query_only", "OFF").db()?;
    set_max_page_count(conn, NO_PAGE_LIMIT)?;
    match fault {
        None => {}
        Some(SimulatedFault::DiskFull) => {
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).db()?;
            set_max_page_count(conn, pages)?;
        }
        Some(SimulatedFault::ReadOnly) => {
            conn.pragma_update(None, "query_only", "ON").db()?;
        }
    }
    Ok(())
}

/// `PRAGMA integrity_check`: an empty list when the database is sound, else SQLite's
/// findings.
pub(super) fn integrity_check(conn: &Connection) -> StoreResult<Vec<String>> {
    let mut st = conn.prepare("PRAGMA integrity_check").db()?;
    let rows = st.query_map([], |r| r.get::<_, String>(0)).db()?;
    let found = rows.collect::<rusqlite::Result<Vec<String>>>().db()?;
    Ok(found.into_iter().filter(|line| line != "ok").collect())
}
