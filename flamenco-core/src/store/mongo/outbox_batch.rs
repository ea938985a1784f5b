//! Group commit for the outbox: the updates that concurrent requests queue at the same
//! moment go to MongoDB together, with ONE `findAndModify` of the counter and ONE
//! `insert`, instead of two commands per request.
//!
//! A caller hands its updates to one task per store ([`Queue::insert`]) and waits for
//! the answer. That task takes what is waiting (up to [`MAX_BATCH`] updates), takes that
//! many sequence numbers at once, inserts the documents in the callers' order and then
//! answers each caller. A caller alone costs what it cost before (two commands); under
//! load the commands per update fall towards one insert per batch.
//!
//! What a caller is told is what became of its own updates: `Ok` only when all of them
//! are stored. The order is the callers' order of arrival at the queue, which for
//! updates that depend on each other (the second sent after the first was answered) is
//! their order, as before (`outbox`). A caller that stops waiting (its request was
//! dropped) does not stop the insert: its updates are stored, as a request cut off
//! after its insert always could be.
//!
//! The task is started on the caller's runtime at first use and again if that runtime
//! went away (each test runtime gets its own).

use mongodb::bson::{doc, Document};
use mongodb::Collection;
use tokio::sync::{mpsc, oneshot};

use super::codec::{oid, update_to_doc};
use super::errors::{duplicate_index, map_err, Mongo};
use super::outbox::take_numbers_in;
use crate::model::TaskUpdate;
use crate::store::{StoreError, StoreResult};

/// At most this many updates go in one batch (one `insert` of at most this many
/// documents; each is a few KB at most, so a batch stays far below MongoDB's 48 MB
/// message limit).
const MAX_BATCH: usize = 256;

/// Callers waiting for the task; beyond this a caller waits to hand its updates over.
const QUEUE_DEPTH: usize = 1024;

struct Job {
    updates: Vec<TaskUpdate>,
    done: oneshot::Sender<StoreResult<()>>,
}

/// The outbox's group-commit queue (one per store).
pub(super) struct Queue {
    counters: Collection<Document>,
    updates: Collection<Document>,
    sender: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
}

impl Queue {
    pub(super) fn new(counters: Collection<Document>, updates: Collection<Document>) -> Queue {
        Queue {
            counters,
            updates,
            sender: std::sync::Mutex::new(None),
        }
    }

    /// Store these updates, in this order, after everything queued before.
    pub(super) async fn insert(&self, updates: Vec<TaskUpdate>) -> StoreResult<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        let mut job = Job { updates, done };
        // Twice at most: a task whose runtime has gone (its receiver dropped) is replaced
        // once.
        for _ in 0..2 {
            let sender = self.sender();
            match sender.send(job).await {
                Ok(()) => {
                    return answer.await.unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(
                            "the outbox insert was abandoned (the Manager is shutting down); \
                             send the update again"
                                .into(),
                        ))
                    })
                }
                Err(mpsc::error::SendError(back)) => {
                    job = back;
                    self.forget(&sender);
                }
            }
        }
        Err(StoreError::Unavailable(
            "the outbox queue's task could not start (the runtime is shutting down); \
             send the update again"
                .into(),
        ))
    }

    /// The running task's sender, starting the task if there is none.
    fn sender(&self) -> mpsc::Sender<Job> {
        let mut guard = self
            .sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = guard.as_ref().filter(|s| !s.is_closed()) {
            return s.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(self.counters.clone(), self.updates.clone(), rx));
        *guard = Some(tx.clone());
        tx
    }

    /// Drop a sender whose task has ended, unless another caller replaced it already.
    fn forget(&self, dead: &mpsc::Sender<Job>) {
        let mut guard = self
            .sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.as_ref().is_some_and(|s| s.same_channel(dead)) {
            *guard = None;
        }
    }
}

/// The task: one batch at a time, each answered before the next is taken.
async fn run(
    counters: Collection<Document>,
    updates: Collection<Document>,
    mut rx: mpsc::Receiver<Job>,
) {
    while let Some(first) = rx.recv().await {
        let mut count = first.updates.len();
        let mut jobs = vec![first];
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.updates.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let results = insert_batch(&counters, &updates, &jobs).await;
        for (job, result) in jobs.into_iter().zip(results) {
            // A caller that stopped waiting is not an error.
            let _ = job.done.send(result);
        }
    }
}

/// One document of a batch and whose it is.
struct Entry {
    job: usize,
    doc: Document,
    update: usize,
}

/// Insert every job's updates with one counter command and (when nothing goes wrong) one
/// insert; returns each job's result, in the jobs' order.
async fn insert_batch(
    counters: &Collection<Document>,
    coll: &Collection<Document>,
    jobs: &[Job],
) -> Vec<StoreResult<()>> {
    let total: usize = jobs.iter().map(|j| j.updates.len()).sum();
    let first = match take_numbers_in(counters, total).await {
        Ok(first) => first,
        Err(e) => return jobs.iter().map(|_| Err(e.clone())).collect(),
    };
    let mut seq = first;
    let mut entries = Vec::with_capacity(total);
    for (j, job) in jobs.iter().enumerate() {
        for (i, u) in job.updates.iter().enumerate() {
            entries.push(Entry {
                job: j,
                doc: update_to_doc(u, seq),
                update: i,
            });
            seq += 1;
        }
    }
    let mut results: Vec<StoreResult<()>> = jobs.iter().map(|_| Ok(())).collect();
    while !entries.is_empty() {
        let docs: Vec<Document> = entries.iter().map(|e| e.doc.clone()).collect();
        let Err(e) = coll.insert_many(docs).ordered(true).await else {
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
        let ours = &jobs[entry.job].updates[entry.update];
        let stored = match coll.find_one(doc! { "_id": oid(ours.id) }).await.db() {
            Ok(stored) => stored,
            Err(e) => {
                for entry in &entries[i..] {
                    results[entry.job] = Err(e.clone());
                }
                break;
            }
        };
        let (job, id) = (entry.job, ours.id);
        let someone_elses = stored.as_ref() != Some(&entry.doc);
        entries.drain(..=i);
        if someone_elses {
            results[job] = Err(StoreError::Duplicate(id));
            entries.retain(|e| e.job != job);
        }
    }
    results
}
