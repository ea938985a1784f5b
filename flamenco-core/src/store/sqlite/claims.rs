//! SQLite side of [`crate::store::ClaimStore`]: the reference sequence
//! ([`crate::store::claims::claim_in_steps`]). Each step is a local transaction, so there
//! is no round trip to save by merging them.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::claims::{claim_in_steps, ClaimOutcome, ClaimStore};
use crate::store::{ClaimRequest, StoreResult};

#[async_trait]
impl ClaimStore for SqliteStore {
    async fn claim_after_stops(&self, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        claim_in_steps(self, req).await
    }
}
