//! The claim's reads on MongoDB: the worker's own open tasks and the first batch of
//! candidates, each candidate with the verdict on its parents, in ONE `aggregate`
//! command ([`own_and_first_batch`]); and the later batches, when a whole batch was
//! taken by other claimers or blocked by parents ([`candidate_batch`], two commands).
//!
//! The one command is a pipeline on `flamenco_tasks`:
//!
//! 1. `$match` the worker's own tasks (the caller's filter: `active`, or `active` and
//!    `cancel-requested`), served by `{status, worker_id, _id}`;
//! 2. `$unionWith` the same collection, whose pipeline is the candidates' query
//!    ([`tasks::candidates_for`]: `$match`, `$sort`, `$limit`, served by the claim index
//!    with no sort in memory) followed by a `$lookup` of the candidates' `parents` by
//!    `_id` that keeps only how many of them exist and are not `completed` (v2 §6.3).
//!
//! Bulky fields (`commands`, `log`, `parents`) are left out of both parts: the claim
//! decides on status and ids, and its compare-and-set answers with the whole task as
//! stored. `$unionWith` needs MongoDB 4.4 (docs/storage.md). The order of the answer is
//! not relied on: own tasks are put in `_id` order and candidates in the claim's order
//! here.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use mongodb::bson::{doc, Bson, Document};

use super::codec::{self, task_from_doc};
use super::errors::Mongo;
use super::{tasks, Db};
use crate::model::{ObjectId, Task, TaskStatus};
use crate::store::{ClaimRequest, StoreError, StoreResult};

/// The field that carries a candidate's number of blocking parents; own tasks lack it.
const BLOCKING: &str = "_blocking_parents";

/// Claim candidates are read and parent-checked this many at a time.
pub(super) const CLAIM_BATCH: usize = 8;

/// One batch of candidates, best first: those no parent blocks, and how many were
/// blocked (they stay at the head of the query, so the next batch skips them).
pub(super) struct CandidateBatch {
    pub free: Vec<Task>,
    pub blocked: usize,
}

impl CandidateBatch {
    /// The query had nothing more to give.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty() && self.blocked == 0
    }
}

/// What the claim's first command answers.
pub(super) struct FirstRead {
    /// The worker's own tasks matching the caller's filter, oldest first, without the
    /// bulky fields.
    pub own: Vec<Task>,
    /// The first batch of candidates; `None` when the worker runs no task types (no
    /// candidates are asked for).
    pub batch: Option<CandidateBatch>,
}

/// The worker's own tasks (`own_filter`) and, when it runs any task types, the first
/// [`CLAIM_BATCH`] candidates with their parents' verdict: one `aggregate`.
pub(super) async fn own_and_first_batch(
    db: &Db,
    req: &ClaimRequest,
    own_filter: Document,
) -> StoreResult<FirstRead> {
    let mut pipeline = vec![
        doc! { "$match": own_filter },
        doc! { "$project": tasks::state_projection() },
    ];
    let with_candidates = !req.task_types.is_empty();
    if with_candidates {
        let (filter, sort) = tasks::candidates_for(db, req).await?;
        pipeline.push(doc! { "$unionWith": {
            "coll": codec::TASKS,
            "pipeline": candidates_pipeline(filter, sort),
        } });
    }
    let docs: Vec<Document> =
        futures::TryStreamExt::try_collect(db.tasks.aggregate(pipeline).await.db()?)
            .await
            .db()?;
    let mut own = Vec::new();
    let mut candidates = Vec::new();
    for mut d in docs {
        match d.remove(BLOCKING) {
            None => own.push(task_from_doc(&d)?),
            Some(blocking) => candidates.push((task_from_doc(&d)?, blocking_count(&blocking)?)),
        }
    }
    own.sort_by_key(|t| t.id);
    candidates.sort_by_key(|(t, _)| (Reverse(t.job_priority), Reverse(t.priority), t.id));
    let batch = with_candidates.then(|| {
        let blocked = candidates.iter().filter(|(_, n)| *n > 0).count();
        let free = candidates
            .into_iter()
            .filter(|(_, n)| *n == 0)
            .map(|(t, _)| t)
            .collect();
        CandidateBatch { free, blocked }
    });
    Ok(FirstRead { own, batch })
}

/// The candidates' query as a pipeline, each candidate with [`BLOCKING`]: how many of
/// its parents exist and are not `completed`.
fn candidates_pipeline(filter: Document, sort: Document) -> Vec<Document> {
    let limit = i64::try_from(CLAIM_BATCH).unwrap_or(i64::MAX);
    let mut hide = tasks::state_projection();
    hide.insert("_parents", 0);
    vec![
        doc! { "$match": filter },
        doc! { "$sort": sort },
        doc! { "$limit": limit },
        doc! { "$lookup": {
            "from": codec::TASKS,
            "localField": "parents",
            "foreignField": "_id",
            "as": "_parents",
        } },
        doc! { "$set": { BLOCKING: { "$size": { "$filter": {
            "input": "$_parents",
            "cond": { "$ne": ["$$this.status", TaskStatus::Completed.as_str()] },
        } } } } },
        doc! { "$project": hide },
    ]
}

fn blocking_count(value: &Bson) -> StoreResult<i64> {
    match value {
        Bson::Int32(n) => Ok(i64::from(*n)),
        Bson::Int64(n) => Ok(*n),
        Bson::Double(n) if n.fract() == 0.0 => Ok(*n as i64),
        other => Err(StoreError::Corrupt(format!(
            "the claim's read answered {other} as a number of blocking parents; \
             is the database server MongoDB 4.4 or later?"
        ))),
    }
}

/// The candidates after skipping `skip` (the blocked ones already seen), with their
/// parents checked: two commands, for the rounds after the first.
pub(super) async fn candidate_batch(
    db: &Db,
    req: &ClaimRequest,
    skip: usize,
) -> StoreResult<CandidateBatch> {
    let batch = tasks::candidates(db, req, skip, CLAIM_BATCH).await?;
    let parents: BTreeSet<ObjectId> = batch
        .iter()
        .flat_map(|t| t.parents.iter().copied())
        .collect();
    let blocking = tasks::blocking_parents(db, &parents).await?;
    let (blocked, free): (Vec<Task>, Vec<Task>) = batch
        .into_iter()
        .partition(|t| t.parents.iter().any(|p| blocking.contains(p)));
    Ok(CandidateBatch {
        free,
        blocked: blocked.len(),
    })
}
