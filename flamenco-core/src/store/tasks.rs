//! [`TaskStore`]: tasks as stored: insert, replace, read, list and count.
//!
//! One concern of the [`super::Store`] trait, implemented by each backend in its file of the
//! same name (`sqlite/tasks.rs`, `mongo/tasks.rs`) and timed by [`super::InstrumentedStore`].

use super::StoreResult;
use super::TaskQuery;
use crate::model::ObjectId;
use crate::model::Task;
use async_trait::async_trait;
use std::collections::BTreeMap;

/// Tasks as stored: insert, replace, read, list and count.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Insert new tasks. Fails with `Duplicate` (and inserts none) if an id exists.
    async fn insert_tasks(&self, tasks: &[Task]) -> StoreResult<()>;

    /// Insert tasks, or replace existing ones wholly (every field, the local ones included).
    async fn upsert_tasks(&self, tasks: &[Task]) -> StoreResult<()>;

    async fn get_task(&self, id: ObjectId) -> StoreResult<Option<Task>>;

    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<Vec<Task>>;

    /// Number of tasks per status string (statuses with no task may be absent).
    async fn count_tasks_by_status(&self) -> StoreResult<BTreeMap<String, u64>>;

    /// Number of tasks per (status, task type), in one grouped query (the metrics scrape
    /// calls it; it must not list tasks). Combinations with no task may be absent.
    async fn count_tasks_by_status_and_type(&self) -> StoreResult<BTreeMap<(String, String), u64>>;
}
