//! Task logs on the [`Manager`]: reading a task's log and following it live.
//!
//! The store keeps the lines ([`crate::store::TaskLogStore`], docs/storage.md "Task
//! logs"); this module is the SDK surface the HTTP routes and the CLI use:
//!
//! * [`Manager::task_log`] reads a tail or a range of lines;
//! * [`Manager::follow_task_log`] is a stream of the lines appended after a given line. It
//!   wakes up when this process stores lines for the task ([`LogEvents`], fed by
//!   [`Manager::task_update`]) and otherwise polls the store every `poll` interval, so it
//!   also sees lines stored by another process (the daemon, seen from the CLI; another
//!   Manager on the same MongoDB database).

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast;

use crate::manager::{ApiError, Manager};
use crate::model::ObjectId;
use crate::store::logs::MAX_READ_LINES;
use crate::store::{TaskLogPage, TaskLogQuery};

/// How many "lines were stored for task X" notices may wait for a slow follower before it
/// misses some (a follower that missed notices reads the store anyway).
const EVENT_CAPACITY: usize = 1024;

/// Notices of new log lines, per task, within this process.
#[derive(Debug)]
pub struct LogEvents {
    tx: broadcast::Sender<ObjectId>,
}

impl Default for LogEvents {
    fn default() -> Self {
        LogEvents {
            tx: broadcast::channel(EVENT_CAPACITY).0,
        }
    }
}

impl LogEvents {
    /// Lines were stored for `task_id`.
    pub fn notify(&self, task_id: ObjectId) {
        // No receiver is not an error: nobody follows a log right now.
        let _ = self.tx.send(task_id);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ObjectId> {
        self.tx.subscribe()
    }
}

/// What a follower waits on between reads.
struct Follower {
    manager: Arc<Manager>,
    task_id: ObjectId,
    next: u64,
    events: broadcast::Receiver<ObjectId>,
    poll: Duration,
    /// Read at once, without waiting (the first read, and after a full page).
    read_now: bool,
}

impl Follower {
    /// Wait until there may be new lines: a notice for this task, or `poll` elapsed.
    async fn wait(&mut self) {
        let deadline = tokio::time::sleep(self.poll);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                event = self.events.recv() => match event {
                    Ok(id) if id == self.task_id => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        deadline.as_mut().await;
                        return;
                    }
                },
            }
        }
    }
}

impl Manager {
    /// Lines of a task's log (tail or range). An unknown task is a `NotFound` (a deleted
    /// task's log goes with it).
    pub async fn task_log(
        &self,
        task_id: ObjectId,
        query: TaskLogQuery,
    ) -> Result<TaskLogPage, ApiError> {
        let page = self.store().read_task_log(task_id, query).await?;
        if page.end.next_line == 0 && self.store().get_task_state(task_id).await?.is_none() {
            return Err(ApiError::NotFound(format!("task {task_id} is unknown")));
        }
        Ok(page)
    }

    /// The notices of new log lines in this process.
    pub fn log_events(&self) -> &LogEvents {
        &self.log_events
    }

    /// The lines of a task's log numbered `from` or more, as they arrive: each item is a
    /// page of new entries (never empty). Checks the store at least every `poll`. The
    /// stream ends only on a store error (its last item) or when dropped.
    pub fn follow_task_log(
        self: &Arc<Self>,
        task_id: ObjectId,
        from: u64,
        poll: Duration,
    ) -> impl Stream<Item = Result<TaskLogPage, ApiError>> + Send + 'static {
        let follower = Follower {
            manager: self.clone(),
            task_id,
            next: from,
            events: self.log_events.subscribe(),
            poll,
            read_now: true,
        };
        futures::stream::unfold(Some(follower), |state| async move {
            let mut f = state?;
            loop {
                if !f.read_now {
                    f.wait().await;
                }
                let query = TaskLogQuery::From {
                    from: f.next,
                    limit: MAX_READ_LINES,
                };
                match f.manager.store().read_task_log(f.task_id, query).await {
                    Ok(page) if page.entries.is_empty() => {
                        f.read_now = false;
                    }
                    Ok(page) => {
                        f.next = page.next_line;
                        f.read_now = page.entries.len() >= MAX_READ_LINES;
                        return Some((Ok(page), Some(f)));
                    }
                    Err(e) => return Some((Err(ApiError::Store(e)), None)),
                }
            }
        })
    }
}
