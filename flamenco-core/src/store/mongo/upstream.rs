//! The job source's operations (upstream mode): storing a download, releasing a
//! reservation, the cancel list. Each task is decided by the shared functions of
//! [`crate::updates`] and written with its own compare-and-set; a task that changed under
//! the write is read and decided again. (Reservation and confirmation are in `protocol`,
//! next to the claim they share the choice with.)

use chrono::{DateTime, Utc};

use super::protocol::{apply_locally, kept_changing, CAS_ATTEMPTS};
use super::MongoStore;
use super::{outbox, tasks, Db};
use crate::model::{ObjectId, Task, TaskStatus};
use crate::store::ClaimRequest;
use crate::store::Claimed;
use crate::store::{CancelReport, MergeReport, StoreResult};
use crate::updates::{self, Refetched, UpstreamCancel};

/// `UpstreamStore::merge_downloaded_tasks`: per task, insert it, or replace the local document
/// with [`updates::merge_downloaded`] of it if no bookkeeping field changed since it was
/// read ([`tasks::exact_filter`]), so a concurrent claim, ping or update is never lost.
pub(super) async fn merge_downloaded(
    db: &Db,
    downloaded: &[Task],
    now: DateTime<Utc>,
) -> StoreResult<MergeReport> {
    let mut report = MergeReport::default();
    'tasks: for server in downloaded {
        for _ in 0..CAS_ATTEMPTS {
            let local = tasks::get_state(db, server.id).await?;
            let merged = updates::merge_downloaded(local.as_ref(), server.clone(), now);
            match &local {
                None => {
                    if tasks::insert_new(db, &merged).await? {
                        report.inserted += 1;
                        continue 'tasks;
                    }
                }
                Some(before) => {
                    if tasks::replace_if_unchanged(db, before, &merged).await? {
                        report.updated += 1;
                        if before.status == TaskStatus::Active
                            && merged.status == TaskStatus::Active
                        {
                            report.kept_running += 1;
                        }
                        continue 'tasks;
                    }
                }
            }
        }
        return Err(kept_changing(server.id));
    }
    Ok(report)
}

/// `UpstreamStore::release_claim`.
pub(super) async fn release(
    db: &Db,
    task_id: ObjectId,
    worker_id: ObjectId,
    verdict: &Refetched,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    for _ in 0..CAS_ATTEMPTS {
        match tasks::get(db, task_id).await? {
            Some(before)
                if before.status == TaskStatus::Active && before.worker_id == Some(worker_id) =>
            {
                let after = updates::after_refetch(&before, verdict, now);
                if tasks::replace_if_unchanged(db, &before, &after).await? {
                    return Ok(true);
                }
            }
            _ => return Ok(false),
        }
    }
    Err(kept_changing(task_id))
}

/// `UpstreamStore::apply_upstream_cancels`.
pub(super) async fn apply_cancels(
    db: &Db,
    ids: &[ObjectId],
    now: DateTime<Utc>,
) -> StoreResult<CancelReport> {
    let mut report = CancelReport::default();
    'ids: for &id in ids {
        for _ in 0..CAS_ATTEMPTS {
            let local = tasks::get_state(db, id).await?;
            let pending = outbox::final_update_pending(db, id).await?;
            match updates::upstream_cancel(id, local.as_ref(), pending, now) {
                UpstreamCancel::RequestCancel => {
                    let Some(before) = local else {
                        continue 'ids;
                    };
                    let mut after = before.clone();
                    after.status = TaskStatus::CancelRequested;
                    after.last_updated = Some(now);
                    if tasks::save(db, &before, &after, Default::default()).await? {
                        report.cancel_requested.push(id);
                        continue 'ids;
                    }
                }
                UpstreamCancel::Queue(update) => {
                    let saved = match local {
                        Some(before) => {
                            let mut after = before.clone();
                            apply_locally(&mut after, &update);
                            tasks::save(db, &before, &after, Default::default()).await?
                        }
                        None => true,
                    };
                    if saved {
                        outbox::insert(db, std::slice::from_ref(&update)).await?;
                        report.queued.push(id);
                        continue 'ids;
                    }
                }
                UpstreamCancel::AlreadyPending => {
                    report.already_pending += 1;
                    continue 'ids;
                }
            }
        }
        return Err(kept_changing(id));
    }
    Ok(report)
}

#[async_trait::async_trait]
impl crate::store::UpstreamStore for MongoStore {
    async fn merge_downloaded_tasks(
        &self,
        new: &[Task],
        now: DateTime<Utc>,
    ) -> StoreResult<MergeReport> {
        self.run(super::upstream::merge_downloaded(&self.db, new, now))
            .await
    }

    async fn reserve_task(&self, req: &ClaimRequest) -> StoreResult<Option<Claimed>> {
        self.run(super::protocol::reserve(&self.db, req)).await
    }

    async fn confirm_claim(
        &self,
        task_id: ObjectId,
        req: &ClaimRequest,
    ) -> StoreResult<Option<Claimed>> {
        self.run(super::protocol::confirm(&self.db, task_id, req))
            .await
    }

    async fn release_claim(
        &self,
        task_id: ObjectId,
        worker_id: ObjectId,
        verdict: &Refetched,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.run(super::upstream::release(
            &self.db, task_id, worker_id, verdict, now,
        ))
        .await
    }

    async fn apply_upstream_cancels(
        &self,
        task_ids: &[ObjectId],
        now: DateTime<Utc>,
    ) -> StoreResult<CancelReport> {
        self.run(super::upstream::apply_cancels(&self.db, task_ids, now))
            .await
    }
}
