//! The sqlite backend of [`crate::store::UpstreamStore`].

use super::SqliteStore;
use crate::model::ObjectId;
use crate::model::Task;
use crate::store::CancelReport;
use crate::store::ClaimRequest;
use crate::store::Claimed;
use crate::store::MergeReport;
use crate::store::StoreResult;
use crate::updates::Refetched;
use chrono::DateTime;
use chrono::Utc;

#[async_trait::async_trait]
impl crate::store::UpstreamStore for SqliteStore {
    async fn merge_downloaded_tasks(
        &self,
        new: &[Task],
        now: DateTime<Utc>,
    ) -> StoreResult<MergeReport> {
        let new = new.to_vec();
        self.writer
            .run(move |c| super::protocol::merge_downloaded(c, &new, now))
            .await
    }

    async fn reserve_task(&self, req: &ClaimRequest) -> StoreResult<Option<Claimed>> {
        let req = req.clone();
        self.writer
            .run(move |c| super::protocol::reserve(c, &req))
            .await
    }

    async fn confirm_claim(
        &self,
        task_id: ObjectId,
        req: &ClaimRequest,
    ) -> StoreResult<Option<Claimed>> {
        let req = req.clone();
        self.writer
            .run(move |c| super::protocol::confirm(c, task_id, &req))
            .await
    }

    async fn release_claim(
        &self,
        task_id: ObjectId,
        worker_id: ObjectId,
        verdict: &Refetched,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let verdict = verdict.clone();
        self.writer
            .run(move |c| super::protocol::release(c, task_id, worker_id, &verdict, now))
            .await
    }

    async fn apply_upstream_cancels(
        &self,
        task_ids: &[ObjectId],
        now: DateTime<Utc>,
    ) -> StoreResult<CancelReport> {
        let ids = task_ids.to_vec();
        self.writer
            .run(move |c| super::protocol::apply_upstream_cancels(c, &ids, now))
            .await
    }
}
