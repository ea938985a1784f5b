//! The indices created at connect (idempotent; default names, so v2's own indices are
//! recognised rather than duplicated).
//!
//! | collection | keys | for |
//! |---|---|---|
//! | `flamenco_tasks` | `{status: 1, priority: 1}` | v2's index, kept |
//! | `flamenco_tasks` | `{status: 1, worker_tag: 1, task_type: 1, job_priority: -1, priority: -1, _id: 1, job: 1}` | the claim's candidate query: filter (worker tags too) and order; `job` for a blocklisted worker's `$nin` on the keys |
//! | `flamenco_tasks` | `{status: 1, worker_id: 1, _id: 1}` | the already-assigned lookup and sign-off |
//! | `flamenco_tasks` | `{status: 1, last_updated: 1, _id: 1}` | cleanup: the finished tasks untouched since the cutoff, oldest first, without walking the younger ones |
//! | `flamenco_tasks` | `{parents: 1}` | cleanup: is this finished task a parent of a waiting one? |
//! | `flamenco_tasks` | `{job: 1, status: 1}` | a job's tasks and their counts per status |
//! | `task_update_queue` | `{task_id: 1, received_on_manager: 1}` | v2's index, kept |
//! | `task_update_queue` | `{seq: 1, _id: 1}` | the outbox's arrival order |
//! | `flamenco_jobs` | `{status: 1}` | listing jobs by status |
//! | `task_log_chunks` | `{task_id: 1, head: 1, start_byte: 1}` | a task's log in order; dropping the tail's oldest chunks |
//! | `flamenco_job_blocklist` | `{job: 1, task_type: 1, worker_id: 1}` | a job's blocklist; one entry per job, type and worker |
//! | `flamenco_job_blocklist` | `{worker_id: 1, job: 1, task_type: 1}` | a worker's entries (a blocklisted worker's claim) |
//! | `webhook_deliveries` | `{next_attempt: 1}` | the webhook sender's due query |

use mongodb::bson::{doc, Document};
use mongodb::error::ErrorKind;
use mongodb::{Collection, IndexModel};

use super::errors::map_err;
use super::Db;
use crate::store::StoreResult;

/// Codes for "an index with these keys exists with other options or another name".
const INDEX_CONFLICT: [i32; 2] = [85, 86];

/// `(collection name, keys)` of every index this store relies on.
pub(super) fn wanted() -> Vec<(&'static str, Document)> {
    vec![
        (super::codec::TASKS, doc! { "status": 1, "priority": 1 }),
        (
            super::codec::TASKS,
            doc! { "status": 1, "worker_tag": 1, "task_type": 1, "job_priority": -1, "priority": -1, "_id": 1, "job": 1 },
        ),
        (
            super::codec::TASKS,
            doc! { "status": 1, "worker_id": 1, "_id": 1 },
        ),
        (
            super::codec::TASKS,
            doc! { "status": 1, "last_updated": 1, "_id": 1 },
        ),
        (super::codec::TASKS, doc! { "parents": 1 }),
        (super::codec::TASKS, doc! { "job": 1, "status": 1 }),
        (
            super::codec::UPDATES,
            doc! { "task_id": 1, "received_on_manager": 1 },
        ),
        (super::codec::UPDATES, doc! { "seq": 1, "_id": 1 }),
        (super::codec::JOBS, doc! { "status": 1 }),
        (
            super::logs::CHUNKS,
            doc! { "task_id": 1, "head": 1, "start_byte": 1 },
        ),
        (
            super::retries::BLOCKLIST,
            doc! { "job": 1, "task_type": 1, "worker_id": 1 },
        ),
        (
            super::retries::BLOCKLIST,
            doc! { "worker_id": 1, "job": 1, "task_type": 1 },
        ),
        (super::webhooks::DELIVERIES, doc! { "next_attempt": 1 }),
    ]
}

async fn ensure_one(collection: &Collection<Document>, keys: Document) -> StoreResult<()> {
    let model = IndexModel::builder().keys(keys.clone()).build();
    match collection.create_index(model).await {
        Ok(_) => Ok(()),
        Err(e) => match e.kind.as_ref() {
            // The same keys under another name or with other options: an operator made
            // it; it serves our queries just as well.
            ErrorKind::Command(c) if INDEX_CONFLICT.contains(&c.code) => {
                tracing::warn!(
                    "MongoDB: an index on {}.{keys} already exists with other options; keeping it ({})",
                    collection.name(),
                    c.message
                );
                Ok(())
            }
            _ => Err(map_err(e)),
        },
    }
}

/// Create the indices that do not exist yet.
pub(super) async fn ensure(db: &Db) -> StoreResult<()> {
    // Not among `Db`'s collections: only the webhook module uses it, by name.
    let deliveries: Collection<Document> = db
        .tasks
        .client()
        .database(&db.tasks.namespace().db)
        .collection(super::webhooks::DELIVERIES);
    for (name, keys) in wanted() {
        let collection = match name {
            super::webhooks::DELIVERIES => &deliveries,
            super::codec::TASKS => &db.tasks,
            super::codec::JOBS => &db.jobs,
            super::logs::CHUNKS => &db.log_chunks,
            super::retries::BLOCKLIST => &db.blocklist,
            _ => &db.updates,
        };
        ensure_one(collection, keys).await?;
    }
    Ok(())
}
