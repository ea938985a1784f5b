//! Group commit for the outbox: the updates that concurrent requests queue at the same
//! moment go to MongoDB together, with ONE `findAndModify` of the counter and ONE
//! `insert`, instead of two commands per request (the queue is `group_commit`'s).
//!
//! A batch takes up to [`MAX_BATCH`] updates, takes that many sequence numbers at once,
//! inserts the documents in the callers' order and then answers each caller. A caller
//! alone costs what it cost before (two commands); under load the commands per update fall
//! towards one insert per batch.
//!
//! What a caller is told is what became of its own updates: `Ok` only when all of them
//! are stored. The order is the callers' order of arrival at the queue, which for
//! updates that depend on each other (the second sent after the first was answered) is
//! their order, as before (`outbox`).

use std::sync::Arc;

use mongodb::bson::{doc, Bson, Document};
use mongodb::Collection;

use super::codec::{oid, update_to_doc};
use super::errors::{duplicate_index, map_err, Mongo};
use super::group_commit::GroupCommit;
use super::outbox::take_numbers_in;
use crate::model::{ObjectId, TaskUpdate};
use crate::store::{StoreError, StoreResult};

/// At most this many updates go in one batch (one `insert` of at most this many
/// documents; each is a few KB at most, so a batch stays far below MongoDB's 48 MB
/// message limit).
const MAX_BATCH: usize = 256;

/// The outbox's group-commit queue (one per store): each item is one caller's updates,
/// already as documents with their ids ([`documents`]); the batch gives them their
/// numbers.
pub(super) type Queue = GroupCommit<Vec<(ObjectId, Document)>>;

/// A caller's updates as the queue takes them: converted once, from the caller's
/// borrowed updates (no copy of the updates themselves), with `seq` left for the batch to
/// set.
pub(super) fn documents(updates: &[TaskUpdate]) -> Vec<(ObjectId, Document)> {
    updates
        .iter()
        .map(|u| (u.id, update_to_doc(u, 0)))
        .collect()
}

/// The queue that stores updates in `updates`, numbered by the counter in `counters`.
pub(super) fn queue(counters: Collection<Document>, updates: Collection<Document>) -> Queue {
    GroupCommit::new(
        "the outbox insert",
        MAX_BATCH,
        Vec::len,
        Arc::new(move |jobs| {
            let (counters, updates) = (counters.clone(), updates.clone());
            Box::pin(async move { insert_batch(&counters, &updates, jobs).await })
        }),
    )
}

/// One document of a batch and whose it is.
struct Entry {
    job: usize,
    id: ObjectId,
    doc: Document,
}

/// Insert every job's updates with one counter command and (when nothing goes wrong) one
/// insert; returns each job's result, in the jobs' order.
async fn insert_batch(
    counters: &Collection<Document>,
    coll: &Collection<Document>,
    jobs: Vec<Vec<(ObjectId, Document)>>,
) -> Vec<StoreResult<()>> {
    let total: usize = jobs.iter().map(Vec::len).sum();
    let first = match take_numbers_in(counters, total).await {
        Ok(first) => first,
        Err(e) => return jobs.iter().map(|_| Err(e.clone())).collect(),
    };
    let mut results: Vec<StoreResult<()>> = jobs.iter().map(|_| Ok(())).collect();
    let mut seq = first;
    let mut entries = Vec::with_capacity(total);
    for (j, job) in jobs.into_iter().enumerate() {
        for (id, mut doc) in job {
            doc.insert("seq", Bson::Int64(seq));
            entries.push(Entry { job: j, id, doc });
            seq += 1;
        }
    }
    while !entries.is_empty() {
        let Err(e) = coll
            .insert_many(entries.iter().map(|e| &e.doc))
            .ordered(true)
            .await
        else {
            break;
        };
        let Some(i) = duplicate_index(&e).filter(|&i| i < entries.len()) else {
            // Nothing is known of the documents not yet confirmed: their jobs fail (and
            // their callers send again; a document that did get in counts as stored then).
            let e = map_err(e);
            for entry in &entries {
                results[entry.job] = Err(e.clone());
            }
            break;
        };
        // The documents before `i` are in. A duplicate that is this very document (an
        // insert applied although its answer was lost, then sent again) counts as
        // stored; any other duplicate id fails its job, whose later updates are then not
        // inserted (as a caller alone would stop at its first error).
        let entry = &entries[i];
        let stored = match coll.find_one(doc! { "_id": oid(entry.id) }).await.db() {
            Ok(stored) => stored,
            Err(e) => {
                for entry in &entries[i..] {
                    results[entry.job] = Err(e.clone());
                }
                break;
            }
        };
        let (job, id) = (entry.job, entry.id);
        let someone_elses = stored.as_ref() != Some(&entry.doc);
        entries.drain(..=i);
        if someone_elses {
            results[job] = Err(StoreError::Duplicate(id));
            entries.retain(|e| e.job != job);
        }
    }
    results
}
