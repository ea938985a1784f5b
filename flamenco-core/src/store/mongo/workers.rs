//! The `flamenco_workers` collection: registration, lookups, "seen", sign-on/off, status
//! requests and the ping/current-task bookkeeping that protocol operations do. Each is one
//! single-document update (two where a request is cleared only if it matches).

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::batch::Statement;
use super::codec::{date, oid, worker_from_doc, worker_to_doc};
use super::errors::{duplicate_index, map_err, Mongo};
use super::Db;
use super::MongoStore;
use crate::model::{worker_status, ObjectId, RequestedStatus, Worker};
use crate::store::{Seen, SignOn, StoreError, StoreResult};

fn by_id(id: ObjectId) -> Document {
    doc! { "_id": oid(id) }
}

pub(super) async fn insert(db: &Db, w: &Worker) -> StoreResult<()> {
    match db.workers.insert_one(worker_to_doc(w)).await {
        Ok(_) => Ok(()),
        Err(e) if duplicate_index(&e).is_some() => Err(StoreError::Duplicate(w.id)),
        Err(e) => Err(map_err(e)),
    }
}

pub(super) async fn get(db: &Db, id: ObjectId) -> StoreResult<Option<Worker>> {
    match db.workers.find_one(by_id(id)).await.db()? {
        Some(d) => worker_from_doc(&d).map(Some),
        None => Ok(None),
    }
}

pub(super) async fn list(db: &Db) -> StoreResult<Vec<Worker>> {
    let docs: Vec<Document> = db
        .workers
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    docs.iter().map(worker_from_doc).collect()
}

/// Store the fast hash of a worker's secret if its bcrypt hash is still `hashed_secret`
/// (v2 wrote it as binary; a string is matched too); false when nothing matched.
pub(super) async fn set_secret_sha256(
    db: &Db,
    id: ObjectId,
    hashed_secret: &str,
    secret_sha256: &str,
) -> StoreResult<bool> {
    let as_binary = Bson::Binary(mongodb::bson::Binary {
        subtype: mongodb::bson::spec::BinarySubtype::Generic,
        bytes: hashed_secret.as_bytes().to_vec(),
    });
    let filter = doc! {
        "_id": oid(id),
        "hashed_secret": { "$in": [as_binary, hashed_secret] },
    };
    let result = db
        .workers
        .update_one(filter, doc! { "$set": { "secret_sha256": secret_sha256 } })
        .await
        .db()?;
    Ok(result.matched_count > 0)
}

/// The `$set` of "seen" (v2 §8.4), without the status (see [`seen`] and [`sign_on`]).
fn seen_fields(seen: &Seen) -> Document {
    let mut set = doc! { "last_activity": date(seen.now) };
    if !seen.address.is_empty() {
        set.insert("address", seen.address.as_str());
    }
    if !seen.software.is_empty() {
        set.insert("software", seen.software.as_str());
    }
    set
}

/// The update "seen" writes when the status stays: [`seen_fields`], and the deferred
/// task report (`current_task_updated` never moved back, `current_task_status` when one
/// was reported).
fn seen_update(seen: &Seen) -> Document {
    let mut set = seen_fields(seen);
    if let Some(task) = seen.current_task {
        set.insert("current_task", oid(task));
    }
    let Some(report) = &seen.task_report else {
        return doc! { "$set": set };
    };
    if let Some(status) = report.status.as_deref().filter(|s| !s.is_empty()) {
        set.insert("current_task_status", status);
    }
    doc! { "$set": set, "$max": { "current_task_updated": date(report.at) } }
}

/// A deferred contact ([`crate::seen`], `mark_awake` false) as one statement of a
/// batched update (`super::batch`).
pub(super) fn seen_statement(id: ObjectId, seen: &Seen) -> Statement {
    Statement {
        filter: by_id(id),
        update: seen_update(seen),
    }
}

/// A may-i-run ping's mark on the worker, as one statement of a batched update:
/// `current_task_updated`, never moved back.
pub(super) fn ping_statement(id: ObjectId, at: DateTime<Utc>) -> Statement {
    Statement {
        filter: by_id(id),
        update: doc! { "$max": { "current_task_updated": date(at) } },
    }
}

/// "Seen"; false when the worker does not exist. `mark_awake` wakes only the statuses in
/// [`worker_status::WOKEN_BY_CONTACT`] (or a missing status): the condition is in the
/// filter of one update, and when it does not hold, a second update writes the rest.
pub(super) async fn seen(db: &Db, id: ObjectId, seen: &Seen) -> StoreResult<bool> {
    if seen.mark_awake {
        let mut wakeable: Vec<Bson> = worker_status::WOKEN_BY_CONTACT
            .iter()
            .map(|s| Bson::String(s.to_string()))
            .collect();
        wakeable.push(Bson::Null);
        let mut waking = seen_update(seen);
        if let Ok(set) = waking.get_document_mut("$set") {
            set.insert("status", worker_status::AWAKE);
        }
        let result = db
            .workers
            .update_one(
                doc! { "_id": oid(id), "status": { "$in": wakeable } },
                waking,
            )
            .await
            .db()?;
        if result.matched_count > 0 {
            return Ok(true);
        }
    }
    let result = db
        .workers
        .update_one(by_id(id), seen_update(seen))
        .await
        .db()?;
    Ok(result.matched_count > 0)
}

/// Sign-on (v2 §4.6): non-empty nickname and task types, `current_task` removed, plus
/// "seen", in one update; false when the worker does not exist.
pub(super) async fn sign_on(
    db: &Db,
    id: ObjectId,
    sign_on: &SignOn,
    seen: &Seen,
) -> StoreResult<bool> {
    let mut set = seen_fields(seen);
    // The worker process started afresh: awake, whatever it was.
    set.insert("status", worker_status::AWAKE);
    if let Some(nickname) = sign_on.nickname.as_deref().filter(|n| !n.is_empty()) {
        set.insert("nickname", nickname);
    }
    if let Some(types) = sign_on
        .supported_task_types
        .as_ref()
        .filter(|t| !t.is_empty())
    {
        set.insert("supported_task_types", types.clone());
    }
    let update = doc! { "$set": set, "$unset": { "current_task": "" } };
    let result = db.workers.update_one(by_id(id), update).await.db()?;
    Ok(result.matched_count > 0)
}

pub(super) async fn set_status_requested(
    db: &Db,
    id: ObjectId,
    requested: Option<RequestedStatus>,
) -> StoreResult<bool> {
    let update = match requested {
        Some(r) => doc! { "$set": { "status_requested": r.as_str() } },
        None => doc! { "$unset": { "status_requested": "" } },
    };
    let result = db.workers.update_one(by_id(id), update).await.db()?;
    Ok(result.matched_count > 0)
}

/// Remove the pending request if it is `status` (a second, conditional update).
async fn clear_request_if(db: &Db, id: ObjectId, status: &str) -> StoreResult<()> {
    db.workers
        .update_one(
            doc! { "_id": oid(id), "status_requested": status },
            doc! { "$unset": { "status_requested": "" } },
        )
        .await
        .db()?;
    Ok(())
}

/// The worker entered `status`: store it, note the contact, clear a matching request.
pub(super) async fn ack_status(
    db: &Db,
    id: ObjectId,
    status: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let result = db
        .workers
        .update_one(
            by_id(id),
            doc! { "$set": { "status": status, "last_activity": date(now) } },
        )
        .await
        .db()?;
    if result.matched_count == 0 {
        return Ok(false);
    }
    clear_request_if(db, id, status).await?;
    Ok(true)
}

/// A ping from this worker about a task (v2 §4.4 step 8): `current_task_updated`, and
/// `current_task_status` when a status was reported.
pub(super) async fn ping(
    db: &Db,
    id: ObjectId,
    now: DateTime<Utc>,
    reported_status: Option<&str>,
) -> StoreResult<()> {
    let mut set = doc! { "current_task_updated": date(now) };
    if let Some(status) = reported_status.filter(|s| !s.is_empty()) {
        set.insert("current_task_status", status);
    }
    db.workers
        .update_one(by_id(id), doc! { "$set": set })
        .await
        .db()?;
    Ok(())
}

/// Sign-off (v2 §4.7): status `down`, and any pending request is withdrawn: a `shutdown`
/// is fulfilled, and a request the worker left without obeying does not carry over to its
/// next start (docs/worker-api.md, "Status requests").
pub(super) async fn signed_off(db: &Db, id: ObjectId) -> StoreResult<()> {
    db.workers
        .update_one(
            by_id(id),
            doc! {
                "$set": { "status": Bson::String(worker_status::DOWN.into()) },
                "$unset": { "status_requested": "" },
            },
        )
        .await
        .db()?;
    Ok(())
}

#[async_trait::async_trait]
impl crate::store::WorkerStore for MongoStore {
    async fn insert_worker(&self, worker: &Worker) -> StoreResult<()> {
        self.run(super::workers::insert(&self.db, worker)).await
    }

    async fn get_worker(&self, id: ObjectId) -> StoreResult<Option<Worker>> {
        self.run(super::workers::get(&self.db, id)).await
    }

    async fn list_workers(&self) -> StoreResult<Vec<Worker>> {
        self.run(super::workers::list(&self.db)).await
    }

    async fn set_worker_secret_sha256(
        &self,
        id: ObjectId,
        hashed_secret: &str,
        secret_sha256: &str,
    ) -> StoreResult<bool> {
        self.run(super::workers::set_secret_sha256(
            &self.db,
            id,
            hashed_secret,
            secret_sha256,
        ))
        .await
    }

    async fn worker_seen(&self, id: ObjectId, seen: &Seen) -> StoreResult<bool> {
        self.run(super::workers::seen(&self.db, id, seen)).await
    }

    async fn worker_sign_on(
        &self,
        id: ObjectId,
        sign_on: &SignOn,
        seen: &Seen,
    ) -> StoreResult<bool> {
        self.run(super::workers::sign_on(&self.db, id, sign_on, seen))
            .await
    }

    async fn set_worker_status_requested(
        &self,
        id: ObjectId,
        requested: Option<RequestedStatus>,
    ) -> StoreResult<bool> {
        self.run(super::workers::set_status_requested(
            &self.db, id, requested,
        ))
        .await
    }

    async fn ack_worker_status(
        &self,
        id: ObjectId,
        status: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.run(super::workers::ack_status(&self.db, id, status, now))
            .await
    }
}
