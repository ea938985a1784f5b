//! [`OutboxStore`]: the update outbox: what waits to go upstream (or to the standalone consumer), and what was set aside.
//!
//! One concern of the [`super::Store`] trait, implemented by each backend in its file of the
//! same name (`sqlite/outbox.rs`, `mongo/outbox.rs`) and timed by [`super::InstrumentedStore`].

use super::SetAsideUpdate;
use super::StoreResult;
use crate::model::ObjectId;
use crate::model::TaskUpdate;
use async_trait::async_trait;
use chrono::DateTime;
use chrono::Utc;

/// The update outbox: what waits to go upstream (or to the standalone consumer), and what was set aside.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Number of updates waiting in the outbox (set-aside updates not included).
    async fn outbox_len(&self) -> StoreResult<u64>;

    /// The oldest `limit` waiting updates, in arrival order (set-aside updates skipped).
    /// Each task's updates are always in the order they arrived; across tasks the
    /// embedded store keeps one global order, the MongoDB store orders by the clocks of
    /// the Managers that queued them (docs/storage.md, "Outbox order").
    async fn outbox_peek(&self, limit: usize) -> StoreResult<Vec<TaskUpdate>>;

    /// Remove acknowledged updates (waiting or set aside); returns how many were removed.
    async fn outbox_ack(&self, ids: &[ObjectId]) -> StoreResult<u64>;

    /// A push was answered but these (pending) updates were not acknowledged: count one
    /// attempt for each, and set aside those that reached `set_aside_after` attempts. Set
    /// aside updates are kept, but no longer counted by [`OutboxStore::outbox_len`] nor returned by
    /// [`OutboxStore::outbox_peek`]. Returns the ids set aside by this call.
    async fn outbox_note_unacknowledged(
        &self,
        ids: &[ObjectId],
        set_aside_after: u32,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>>;

    /// The oldest `limit` set-aside updates, in arrival order.
    async fn outbox_set_aside(&self, limit: usize) -> StoreResult<Vec<SetAsideUpdate>>;

    /// Number of set-aside updates.
    async fn outbox_set_aside_len(&self) -> StoreResult<u64>;

    /// Put every set-aside update back in the outbox (after the pending ones, attempts reset
    /// to zero). Returns how many.
    async fn outbox_retry_set_aside(&self) -> StoreResult<u64>;
}
