//! SQLite side of [`crate::store::ClaimStore`]: the reference sequence
//! ([`crate::store::claims::claim_in_steps`]), after a read that answers an empty poll
//! without the writer.
//!
//! Each step of the sequence is a local transaction, so there is no round trip to save by
//! merging them. What costs is the hand-off to the writer thread and back: on an idle farm
//! most polls find nothing, and each paid two thread wake-ups and a write transaction to
//! learn it. When the last claim came back empty, the claim first asks a reader, on the
//! calling thread, the same question the writer would ([`super::protocol::pick`]) plus
//! whether the worker has `cancel-requested` tasks to stop; if neither, the answer is
//! "nothing" at once. The reader sees the last commit, and the writer answers only after
//! its commit, so the answer is as current as the writer's would have been when the poll
//! arrived. While claims find work, that part of the read is skipped (it would only repeat
//! the writer's), and the read only asks whether there is anything to stop, so that a
//! claim with nothing to stop goes to the writer without the sequence's listing read.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension};

use super::rows::{blob, Db};
use super::SqliteStore;
use crate::store::claims::{claim_in_steps, ClaimOutcome, ClaimStore};
use crate::store::{ClaimRequest, StoreResult};

/// Whether the worker has a `cancel-requested` task (`tasks_by_status_type`'s range for
/// that status: a few entries at most).
const HAS_CANCEL_REQUESTED: &str =
    "SELECT 1 FROM tasks WHERE status = 'cancel-requested' AND worker_id = ?1 LIMIT 1";

/// Whether the worker has `cancel-requested` tasks to stop, and, when asked (`check_empty`),
/// whether a claim for `req` would then find nothing.
fn before_claim(
    conn: &Connection,
    req: &ClaimRequest,
    check_empty: bool,
) -> StoreResult<(bool, bool)> {
    let stopping = conn
        .prepare_cached(HAS_CANCEL_REQUESTED)
        .db()?
        .query_row([blob(req.worker_id)], |_| Ok(()))
        .optional()
        .db()?
        .is_some();
    let nothing = check_empty && !stopping && super::protocol::pick(conn, req)?.is_none();
    Ok((stopping, nothing))
}

#[async_trait]
impl ClaimStore for SqliteStore {
    async fn claim_after_stops(&self, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        let check_empty = self.last_claim_empty.load(Ordering::Relaxed);
        let (stopping, nothing) = self
            .readers
            .run_here_in_transaction(|c| before_claim(c, req, check_empty))
            .await?;
        if nothing {
            return Ok(ClaimOutcome {
                canceled: Vec::new(),
                claimed: None,
            });
        }
        let outcome = if stopping {
            claim_in_steps(self, req).await?
        } else {
            // Nothing to stop: the claim alone, without the sequence's listing read.
            ClaimOutcome {
                canceled: Vec::new(),
                claimed: crate::store::WorkerProtocolStore::claim_task(self, req).await?,
            }
        };
        self.last_claim_empty
            .store(outcome.claimed.is_none(), Ordering::Relaxed);
        Ok(outcome)
    }
}
