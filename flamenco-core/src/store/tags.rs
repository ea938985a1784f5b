//! Worker tags in the stores: the [`TagStore`] trait, a supertrait of
//! [`crate::store::Store`] (backends in `sqlite/tags.rs` and `mongo/tags.rs`). The rules
//! (what a tag is, what adding and removing does, the limits) are [`crate::tags`]'; the
//! claim's tag filter stays in the claim query of each backend.

use async_trait::async_trait;

use super::StoreResult;
use crate::model::ObjectId;
use crate::tags::{TagChange, TagError};

/// What [`TagStore::tag_workers`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagOutcome {
    /// Applied; this many workers' tag lists changed (the others had them already).
    Changed(u64),
    /// These ids name no worker; nothing was changed.
    Unknown(Vec<ObjectId>),
    /// The change would break a limit for some worker ([`TagError::TooMany`]); nothing
    /// was changed.
    Refused(TagError),
}

/// Storage of worker tags.
#[async_trait]
pub trait TagStore: Send + Sync {
    /// Apply `change` to each of these workers, as one operation: on SQLite one
    /// transaction; on MongoDB one read of all of them, then one compare-and-set per
    /// worker whose list changes. Every worker is checked first (unknown ids, the
    /// per-worker limit), so a refused request changes nothing.
    async fn tag_workers(&self, ids: &[ObjectId], change: &TagChange) -> StoreResult<TagOutcome>;
}
