//! Conditional re-fetch before assignment (manager-v2.md §5.4, cases 18–20 of §10).
//!
//! The scheduler first *reserves* a task in the store (so no other worker gets it), then
//! asks the Server with `If-None-Match` whether it changed, with no lock held and a short
//! timeout, and then confirms the reservation or releases it with the Server's verdict
//! (see `Manager::next_task`). As in v2, a Server that cannot be reached (or answers 5xx)
//! counts as "unchanged". Unlike v2, after such a failure re-fetches pause for a while
//! (`refetch_pause_after_failure`), so an unreachable Server does not add its timeout to
//! every worker's `/task`.

use std::time::Instant;

use super::client::RefetchAnswer;
use super::status::Call;
use super::Upstream;
use crate::model::Task;
use crate::updates::Refetched;

/// The outcome of re-validating a reserved task.
#[derive(Clone, Debug, PartialEq)]
pub enum Revalidation {
    /// Hand it out.
    Unchanged,
    /// Release the reservation with this verdict and choose again.
    Changed(Refetched),
}

impl Upstream {
    /// Ask the Server whether `task` is still as we have it.
    pub async fn revalidate(
        &self,
        task: &Task,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Revalidation {
        if self.refetch_paused() {
            return Revalidation::Unchanged;
        }
        let answer = self.client().refetch(task.id, &task.etag).await;
        self.tracker().totals(|t| t.refetches += 1);
        match answer {
            RefetchAnswer::NotModified => {
                self.tracker().success(Call::Refetch, now);
                Revalidation::Unchanged
            }
            RefetchAnswer::Unknown(why) => {
                tracing::warn!(task = %task.id, "cannot re-validate the task with the Flamenco Server ({why}); handing it out as it is");
                self.tracker().failure(Call::Refetch, why, now);
                self.pause_refetches();
                Revalidation::Unchanged
            }
            RefetchAnswer::Changed(server) => {
                self.tracker().success(Call::Refetch, now);
                self.tracker().totals(|t| t.refetch_changes += 1);
                tracing::info!(task = %task.id, status = %server.status, "the Flamenco Server changed the task; choosing again");
                Revalidation::Changed(Refetched::Changed(server))
            }
            RefetchAnswer::Gone(why) => {
                self.tracker().success(Call::Refetch, now);
                self.tracker().totals(|t| t.refetch_changes += 1);
                tracing::info!(task = %task.id, "the Flamenco Server no longer has the task for us ({why}); canceling it here");
                Revalidation::Changed(Refetched::Gone)
            }
        }
    }

    fn refetch_paused(&self) -> bool {
        let paused = self
            .refetch_paused_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        paused.is_some_and(|until| Instant::now() < until)
    }

    fn pause_refetches(&self) {
        let pause = self.options().refetch_pause_after_failure;
        if pause.is_zero() {
            return;
        }
        *self
            .refetch_paused_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + pause);
    }
}
