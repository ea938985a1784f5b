//! Group commit: the writes that concurrent requests hand over at the same moment go to
//! MongoDB together, in one command (or a few), instead of one round trip per request.
//! Used by the task logs' chunks (`logs`).
//!
//! A caller hands its item to one task per queue ([`GroupCommit::submit`]) and waits for
//! the answer. That task takes what is waiting (up to the queue's batch size, counted in
//! [`GroupCommit`]'s `size` of each item), commits it with the queue's commit function,
//! and answers each caller with the result for its own item. A caller alone costs what it
//! would cost without the queue; under load the commands per item fall towards one per
//! batch.
//!
//! Items are committed in the callers' order of arrival at the queue, which for writes that
//! depend on each other (the second sent after the first was answered) is their order. A
//! caller that stops waiting (its request was dropped) does not stop the commit: its item
//! is stored, as a request cut off after its write always could be.
//!
//! The task is started on the caller's runtime at first use and again if that runtime went
//! away (each test runtime gets its own).

use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::store::{StoreError, StoreResult};

/// Callers waiting for the task; beyond this a caller waits to hand its item over.
const QUEUE_DEPTH: usize = 1024;

/// Commits a batch of items; returns one result per item, in the items' order.
pub(super) type Commit<T> =
    Arc<dyn Fn(Vec<T>) -> BoxFuture<'static, Vec<StoreResult<()>>> + Send + Sync>;

struct Job<T> {
    item: T,
    done: oneshot::Sender<StoreResult<()>>,
}

/// One group-commit queue (one per store and kind of write).
pub(super) struct GroupCommit<T> {
    /// What is committed, for errors ("the log chunks' insert").
    what: &'static str,
    /// A batch holds items up to this total size …
    max_batch: usize,
    /// … each item counting this much (its documents, say).
    size: fn(&T) -> usize,
    commit: Commit<T>,
    sender: Mutex<Option<mpsc::Sender<Job<T>>>>,
}

impl<T: Send + 'static> GroupCommit<T> {
    pub(super) fn new(
        what: &'static str,
        max_batch: usize,
        size: fn(&T) -> usize,
        commit: Commit<T>,
    ) -> GroupCommit<T> {
        GroupCommit {
            what,
            max_batch,
            size,
            commit,
            sender: Mutex::new(None),
        }
    }

    /// Commit `item` after everything handed over before; `Ok` once it is stored.
    pub(super) async fn submit(&self, item: T) -> StoreResult<()> {
        let (done, answer) = oneshot::channel();
        let mut job = Job { item, done };
        // Twice at most: a task whose runtime has gone (its receiver dropped) is replaced
        // once.
        for _ in 0..2 {
            let sender = self.sender();
            match sender.send(job).await {
                Ok(()) => {
                    return answer.await.unwrap_or_else(|_| {
                        Err(StoreError::Unavailable(format!(
                            "{} was abandoned (the Manager is shutting down); send the \
                             request again",
                            self.what
                        )))
                    })
                }
                Err(mpsc::error::SendError(back)) => {
                    job = back;
                    self.forget(&sender);
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "the task of {} could not start (the runtime is shutting down); send the \
             request again",
            self.what
        )))
    }

    /// The running task's sender, starting the task if there is none.
    fn sender(&self) -> mpsc::Sender<Job<T>> {
        let mut guard = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = guard.as_ref().filter(|s| !s.is_closed()) {
            return s.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(self.commit.clone(), self.max_batch, self.size, rx));
        *guard = Some(tx.clone());
        tx
    }

    /// Drop a sender whose task has ended, unless another caller replaced it already.
    fn forget(&self, dead: &mpsc::Sender<Job<T>>) {
        let mut guard = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.as_ref().is_some_and(|s| s.same_channel(dead)) {
            *guard = None;
        }
    }
}

/// The task: one batch at a time, each answered before the next is taken.
async fn run<T>(
    commit: Commit<T>,
    max_batch: usize,
    size: fn(&T) -> usize,
    mut rx: mpsc::Receiver<Job<T>>,
) {
    while let Some(first) = rx.recv().await {
        let mut total = size(&first.item);
        let mut jobs = vec![first];
        while total < max_batch {
            match rx.try_recv() {
                Ok(job) => {
                    total += size(&job.item);
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let (items, answers): (Vec<T>, Vec<_>) = jobs.into_iter().map(|j| (j.item, j.done)).unzip();
        let count = items.len();
        let mut results = commit(items).await;
        // A commit function that answered too few items leaves the rest failed, not
        // hanging.
        results.resize_with(count, || {
            Err(StoreError::Unavailable(
                "the batch's commit gave no answer for this write".into(),
            ))
        });
        for (done, result) in answers.into_iter().zip(results) {
            // A caller that stopped waiting is not an error.
            let _ = done.send(result);
        }
    }
}
