//! The indices created at connect (idempotent; default names, so v2's own indices are
//! recognised rather than duplicated).
//!
//! | collection | keys | for |
//! |---|---|---|
//! | `flamenco_tasks` | `{status: 1, priority: 1}` | v2's index, kept |
//! | `flamenco_tasks` | `{status: 1, worker_tag: 1, task_type: 1, job_priority: -1, priority: -1, _id: 1, job: 1}` | the claim's candidate query: filter (worker tags too) and order; `job` for a blocklisted worker's `$nin` on the keys |
//! | `flamenco_tasks` | `{status: 1, worker_id: 1, _id: 1}` | the already-assigned lookup and sign-off |
//! | `flamenco_tasks` | `{status: 1, last_updated: 1, _id: 1}`, partial: `status` from `canceled` to `failed` | cleanup: the finished tasks untouched since the cutoff, oldest first, without walking the younger ones; partial, so a running task's updates (which write `last_updated`) move no key in it |
//! | `flamenco_tasks` | `{parents: 1}` | cleanup: is this finished task a parent of a waiting one? |
//! | `flamenco_tasks` | `{job: 1, status: 1}` | a job's tasks and their counts per status |
//! | `flamenco_tasks` | `{outbox_at: 1}`, sparse | the tasks with waiting updates, oldest first (the outbox's reader); only those tasks are in it |
//! | `flamenco_tasks` | `{"outbox._id": 1}`, sparse | which task holds a waiting update (acknowledgements); only those tasks are in it |
//! | `task_update_queue` | `{task_id: 1, received_on_manager: 1}` | v2's index, kept |
//! | `task_update_queue` | `{seq: 1, _id: 1}` | the order of the updates waiting there |
//! | `flamenco_jobs` | `{status: 1}` | listing jobs by status |
//! | `task_log_chunks` | `{task_id: 1, head: 1, start_byte: 1}` | a task's log in order; dropping the tail's oldest chunks |
//! | `flamenco_job_blocklist` | `{job: 1, task_type: 1, worker_id: 1}` | a job's blocklist; one entry per job, type and worker |
//! | `flamenco_job_blocklist` | `{worker_id: 1, job: 1, task_type: 1}` | a worker's entries (a blocklisted worker's claim) |
//! | `webhook_deliveries` | `{next_attempt: 1}` | the webhook sender's due query |

use mongodb::bson::{doc, Document};
use mongodb::error::ErrorKind;
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};

use super::errors::map_err;
use super::outbox_entries as entries;
use super::Db;
use crate::model::TaskStatus;
use crate::store::StoreResult;

/// Codes for "an index with these keys exists with other options or another name".
const INDEX_CONFLICT: [i32; 2] = [85, 86];

/// One index this store relies on.
pub(super) struct Wanted {
    pub collection: &'static str,
    pub keys: Document,
    /// Only the documents this filter matches are in the index.
    pub partial: Option<Document>,
    /// Only the documents that have the (single) key field are in the index.
    pub sparse: bool,
}

/// The statuses the cleanup deletes: `completed`, `failed`, `canceled`.
pub(super) fn finished_statuses() -> [&'static str; 3] {
    [
        TaskStatus::Completed.as_str(),
        TaskStatus::Failed.as_str(),
        TaskStatus::Canceled.as_str(),
    ]
}

/// The cleanup index's filter: the one string range from the least to the greatest
/// finished status. MongoDB 4.4 takes no `$in` in a partial filter (6.0 does), and two
/// indexes with the same keys and different filters need 5.0, so one range it is. It
/// also holds `claimed-by-manager` (upstream mode's waiting tasks, which enter it once
/// when downloaded and leave when claimed) but none of `queued`, `active`,
/// `cancel-requested` and `soft-failed`: the statuses whose tasks a worker updates.
pub(super) fn finished_range() -> Document {
    let statuses = finished_statuses();
    let least = statuses.iter().min().copied().unwrap_or_default();
    let greatest = statuses.iter().max().copied().unwrap_or_default();
    doc! { "status": { "$gte": least, "$lte": greatest } }
}

/// Every index this store relies on.
pub(super) fn wanted() -> Vec<Wanted> {
    let plain = |collection, keys| Wanted {
        collection,
        keys,
        partial: None,
        sparse: false,
    };
    let mut wanted: Vec<Wanted> = [
        (super::codec::TASKS, doc! { "status": 1, "priority": 1 }),
        (
            super::codec::TASKS,
            doc! { "status": 1, "worker_tag": 1, "task_type": 1, "job_priority": -1, "priority": -1, "_id": 1, "job": 1 },
        ),
        (
            super::codec::TASKS,
            doc! { "status": 1, "worker_id": 1, "_id": 1 },
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
    .into_iter()
    .map(|(collection, keys)| plain(collection, keys))
    .collect();
    wanted.push(Wanted {
        collection: super::codec::TASKS,
        keys: doc! { "status": 1, "last_updated": 1, "_id": 1 },
        partial: Some(finished_range()),
        sparse: false,
    });
    // Only the tasks with waiting updates (`outbox_entries`): a task enters them when an
    // update is queued in it and leaves when its last one is taken. Sparse rather than
    // partial: MongoDB uses either for the outbox's queries, SecantusDB (the tests'
    // server) only a sparse one.
    for keys in [
        doc! { entries::AT: 1 },
        doc! { format!("{}._id", entries::FIELD): 1 },
    ] {
        wanted.push(Wanted {
            collection: super::codec::TASKS,
            keys,
            partial: None,
            sparse: true,
        });
    }
    wanted
}

async fn ensure_one(
    collection: &Collection<Document>,
    keys: Document,
    partial: Option<Document>,
    sparse: bool,
) -> StoreResult<()> {
    let options = match (partial, sparse) {
        (Some(filter), _) => Some(
            IndexOptions::builder()
                .partial_filter_expression(filter)
                .build(),
        ),
        (None, true) => Some(IndexOptions::builder().sparse(true).build()),
        (None, false) => None,
    };
    let model = IndexModel::builder()
        .keys(keys.clone())
        .options(options)
        .build();
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
    for Wanted {
        collection: name,
        keys,
        partial,
        sparse,
    } in wanted()
    {
        let collection = match name {
            super::webhooks::DELIVERIES => &deliveries,
            super::codec::TASKS => &db.tasks,
            super::codec::JOBS => &db.jobs,
            super::logs::CHUNKS => &db.log_chunks,
            super::retries::BLOCKLIST => &db.blocklist,
            _ => &db.updates,
        };
        ensure_one(collection, keys, partial, sparse).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The partial filter, as MongoDB compares strings (bytewise): every finished status
    /// is in the range, no status of a task a worker updates is.
    #[test]
    fn the_cleanup_range_holds_the_finished_statuses_only() {
        let range = finished_range();
        let bounds = range.get_document("status").expect("status bounds");
        let least = bounds.get_str("$gte").expect("$gte");
        let greatest = bounds.get_str("$lte").expect("$lte");
        let inside = |s: &str| least <= s && s <= greatest;
        for s in finished_statuses() {
            assert!(inside(s), "{s} is finished, outside {range}");
        }
        for s in [
            TaskStatus::Queued,
            TaskStatus::Active,
            TaskStatus::CancelRequested,
            TaskStatus::SoftFailed,
        ] {
            assert!(!inside(s.as_str()), "{} is in {range}", s.as_str());
        }
        assert!(
            inside(TaskStatus::ClaimedByManager.as_str()),
            "as documented"
        );
        let cleanup: Vec<Wanted> = wanted()
            .into_iter()
            .filter(|w| w.partial == Some(range.clone()))
            .collect();
        assert_eq!(cleanup.len(), 1, "one index has the cleanup's range");
        assert_eq!(
            cleanup[0].keys,
            doc! { "status": 1, "last_updated": 1, "_id": 1 }
        );
        assert_eq!(
            wanted().iter().filter(|w| w.partial.is_some()).count(),
            1,
            "no other index is partial"
        );
        let sparse: Vec<Document> = wanted()
            .into_iter()
            .filter(|w| w.sparse)
            .map(|w| w.keys)
            .collect();
        assert_eq!(
            sparse,
            [doc! { entries::AT: 1 }, doc! { "outbox._id": 1 }],
            "the outbox's two are sparse, each on one field"
        );
    }
}
