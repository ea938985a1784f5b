//! The `workers` table: registration, lookups, "seen", sign-on/off, status requests and
//! the ping/current-task bookkeeping that protocol operations do.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::rows::{
    blob, is_duplicate, map_err, ms, opt_blob, opt_ms, to_json, worker_from_row, Db, WORKER_COLUMNS,
};
use super::SqliteStore;
use crate::model::{worker_status, ObjectId, RequestedStatus, Worker};
use crate::store::{Seen, SignOn, StoreError, StoreResult, TaskReport};

pub(super) fn insert(conn: &Connection, w: &Worker) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO workers (id, hashed_secret, nickname, address, status, platform, \
           time_cost, supported_task_types, software, current_task, last_activity, \
           current_task_status, current_task_updated, status_requested, secret_sha256, tags) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )
    .db()?
    .execute(params![
        blob(w.id),
        w.hashed_secret,
        w.nickname,
        w.address,
        w.status,
        w.platform,
        w.time_cost,
        to_json(&w.supported_task_types)?,
        w.software,
        opt_blob(w.current_task),
        opt_ms(w.last_activity),
        w.current_task_status,
        opt_ms(w.current_task_updated),
        w.status_requested.map(|s| s.as_str()),
        w.secret_sha256,
        to_json(&w.tags)?,
    ])
    .map_err(|e| {
        if is_duplicate(&e) {
            StoreError::Duplicate(w.id)
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

pub(super) fn get(conn: &Connection, id: ObjectId) -> StoreResult<Option<Worker>> {
    let sql = format!("SELECT {WORKER_COLUMNS} FROM workers WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql).db()?;
    let mut rows = stmt.query([blob(id)]).db()?;
    match rows.next().db()? {
        Some(row) => worker_from_row(row).map(Some),
        None => Ok(None),
    }
}

pub(super) fn list(conn: &Connection) -> StoreResult<Vec<Worker>> {
    let sql = format!("SELECT {WORKER_COLUMNS} FROM workers ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql).db()?;
    let mut rows = stmt.query([]).db()?;
    let mut workers = Vec::new();
    while let Some(row) = rows.next().db()? {
        workers.push(worker_from_row(row)?);
    }
    Ok(workers)
}

/// Store the fast hash of a worker's secret, if its bcrypt hash is still `hashed_secret`;
/// false when the worker does not exist or its hash changed meanwhile.
pub(super) fn set_secret_sha256(
    conn: &Connection,
    id: ObjectId,
    hashed_secret: &str,
    secret_sha256: &str,
) -> StoreResult<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE workers SET secret_sha256 = ?3 WHERE id = ?1 AND hashed_secret = ?2",
        )
        .db()?
        .execute(params![blob(id), hashed_secret, secret_sha256])
        .db()?;
    Ok(n > 0)
}

/// "Seen" (v2 §8.4); false when the worker does not exist. `mark_awake` wakes only the
/// statuses in [`worker_status::WOKEN_BY_CONTACT`]: an `asleep` or `shutdown` worker stays
/// so until it acknowledges another status or signs on.
pub(super) fn seen(conn: &Connection, id: ObjectId, seen: &Seen) -> StoreResult<bool> {
    let [s1, s2, s3, s4] = worker_status::WOKEN_BY_CONTACT;
    let n = conn
        .prepare_cached(
            "UPDATE workers SET last_activity = ?2, \
               status = CASE WHEN ?3 AND status IN (?6, ?7, ?8, ?9) THEN 'awake' \
                             ELSE status END, \
               address = CASE WHEN ?4 = '' THEN address ELSE ?4 END, \
               software = CASE WHEN ?5 = '' THEN software ELSE ?5 END \
             WHERE id = ?1",
        )
        .db()?
        .execute(params![
            blob(id),
            ms(seen.now),
            seen.mark_awake,
            seen.address,
            seen.software,
            s1,
            s2,
            s3,
            s4,
        ])
        .db()?;
    if let (true, Some(report)) = (n > 0, &seen.task_report) {
        report_task(conn, id, report)?;
    }
    if let (true, Some(task)) = (n > 0, seen.current_task) {
        set_current_task(conn, id, task)?;
    }
    Ok(n > 0)
}

/// A deferred task report ([`crate::store::TaskReport`]): `current_task_updated` never
/// moved back, `current_task_status` when one was reported.
pub(super) fn report_task(conn: &Connection, id: ObjectId, report: &TaskReport) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE workers SET \
           current_task_updated = max(coalesce(current_task_updated, ?2), ?2), \
           current_task_status = coalesce(?3, current_task_status) \
         WHERE id = ?1",
    )
    .db()?
    .execute(params![blob(id), ms(report.at), report.status])
    .db()?;
    Ok(())
}

/// Sign-on (v2 §4.6): non-empty nickname and task types, `current_task` removed, status
/// `awake` whatever it was (the worker process started afresh), plus "seen"; false when
/// the worker does not exist.
pub(super) fn sign_on(
    conn: &Connection,
    id: ObjectId,
    sign_on: &SignOn,
    seen_now: &Seen,
) -> StoreResult<bool> {
    let nickname = sign_on.nickname.as_deref().unwrap_or_default();
    let types = match &sign_on.supported_task_types {
        Some(types) if !types.is_empty() => Some(to_json(types)?),
        _ => None,
    };
    let n = conn
        .prepare_cached(
            "UPDATE workers SET current_task = NULL, status = 'awake', \
               nickname = CASE WHEN ?2 = '' THEN nickname ELSE ?2 END, \
               supported_task_types = coalesce(?3, supported_task_types) \
             WHERE id = ?1",
        )
        .db()?
        .execute(params![blob(id), nickname, types])
        .db()?;
    if n == 0 {
        return Ok(false);
    }
    seen(conn, id, seen_now)
}

pub(super) fn set_status_requested(
    conn: &Connection,
    id: ObjectId,
    requested: Option<RequestedStatus>,
) -> StoreResult<bool> {
    let n = conn
        .prepare_cached("UPDATE workers SET status_requested = ?2 WHERE id = ?1")
        .db()?
        .execute(params![blob(id), requested.map(|r| r.as_str())])
        .db()?;
    Ok(n > 0)
}

/// The worker entered `status`: store it, clear a matching request, and note the contact
/// in `last_activity`.
pub(super) fn ack_status(
    conn: &Connection,
    id: ObjectId,
    status: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE workers SET status = ?2, last_activity = ?3, \
               status_requested = CASE WHEN status_requested = ?2 THEN NULL \
                                       ELSE status_requested END \
             WHERE id = ?1",
        )
        .db()?
        .execute(params![blob(id), status, ms(now)])
        .db()?;
    Ok(n > 0)
}

/// A ping from this worker about a task (v2 §4.4 step 8): `current_task_updated`, and
/// `current_task_status` when a status was reported.
pub(super) fn ping(
    conn: &Connection,
    id: ObjectId,
    now: DateTime<Utc>,
    reported_status: Option<&str>,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE workers SET current_task_updated = ?2, \
           current_task_status = coalesce(?3, current_task_status) \
         WHERE id = ?1",
    )
    .db()?
    .execute(params![blob(id), ms(now), reported_status])
    .db()?;
    Ok(())
}

pub(super) fn set_current_task(conn: &Connection, id: ObjectId, task: ObjectId) -> StoreResult<()> {
    conn.prepare_cached("UPDATE workers SET current_task = ?2 WHERE id = ?1")
        .db()?
        .execute(params![blob(id), blob(task)])
        .db()?;
    Ok(())
}

/// Sign-off (v2 §4.7): status `down`, and any pending request is withdrawn: a `shutdown`
/// is fulfilled, and a request the worker left without obeying does not carry over to its
/// next start (docs/worker-api.md, "Status requests").
pub(super) fn signed_off(conn: &Connection, id: ObjectId) -> StoreResult<()> {
    conn.prepare_cached("UPDATE workers SET status = ?2, status_requested = NULL WHERE id = ?1")
        .db()?
        .execute(params![blob(id), worker_status::DOWN])
        .db()?;
    Ok(())
}

#[async_trait::async_trait]
impl crate::store::WorkerStore for SqliteStore {
    async fn insert_worker(&self, worker: &Worker) -> StoreResult<()> {
        let worker = worker.clone();
        self.writer
            .run(move |c| super::workers::insert(c, &worker))
            .await
    }

    async fn get_worker(&self, id: ObjectId) -> StoreResult<Option<Worker>> {
        // A primary-key lookup behind every authenticated request the worker cache
        // misses: read on the calling thread.
        self.readers
            .run_here(move |c| super::workers::get(c, id))
            .await
    }

    async fn list_workers(&self) -> StoreResult<Vec<Worker>> {
        self.readers.run(super::workers::list).await
    }

    async fn set_worker_secret_sha256(
        &self,
        id: ObjectId,
        hashed_secret: &str,
        secret_sha256: &str,
    ) -> StoreResult<bool> {
        let (hashed, fast) = (hashed_secret.to_string(), secret_sha256.to_string());
        self.writer
            .run(move |c| super::workers::set_secret_sha256(c, id, &hashed, &fast))
            .await
    }

    async fn worker_seen(&self, id: ObjectId, seen: &Seen) -> StoreResult<bool> {
        let seen = seen.clone();
        self.writer
            .run(move |c| super::workers::seen(c, id, &seen))
            .await
    }

    async fn worker_sign_on(
        &self,
        id: ObjectId,
        sign_on: &SignOn,
        seen: &Seen,
    ) -> StoreResult<bool> {
        let (sign_on, seen) = (sign_on.clone(), seen.clone());
        self.writer
            .run(move |c| super::workers::sign_on(c, id, &sign_on, &seen))
            .await
    }

    async fn set_worker_status_requested(
        &self,
        id: ObjectId,
        requested: Option<RequestedStatus>,
    ) -> StoreResult<bool> {
        self.writer
            .run(move |c| super::workers::set_status_requested(c, id, requested))
            .await
    }

    async fn ack_worker_status(
        &self,
        id: ObjectId,
        status: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let status = status.to_string();
        self.writer
            .run(move |c| super::workers::ack_status(c, id, &status, now))
            .await
    }
}
