//! Worker tags on the [`Manager`] (docs/jobs.md, "Worker tags"): the one entry point the
//! API, the dashboard, the CLI and bulk actions use to tag workers. The rules are
//! [`crate::tags`]'; storage is [`crate::store::TagStore`].

use super::{ApiError, Manager};
use crate::model::ObjectId;
use crate::store::TagOutcome;
use crate::tags::{TagChange, MAX_WORKERS_PER_TAGGING};

impl Manager {
    /// Add `add` to and remove `remove` from the tags of each of these workers, as ONE
    /// store operation. Returns how many workers' tags changed (a worker that already had
    /// the result counts as unchanged).
    ///
    /// Refused, with nothing changed: an invalid tag or more than 32 on a side (400
    /// [`ApiError::InvalidField`], field `add` or `remove`), no ids or more than
    /// [`MAX_WORKERS_PER_TAGGING`] (400), an unknown worker (404 naming it), a worker
    /// that would end up with more than 32 tags (400).
    pub async fn tag_workers(
        &self,
        ids: &[ObjectId],
        add: &[String],
        remove: &[String],
    ) -> Result<u64, ApiError> {
        if ids.is_empty() {
            return Err(ApiError::BadRequest("no workers given to tag".into()));
        }
        if ids.len() > MAX_WORKERS_PER_TAGGING {
            return Err(ApiError::BadRequest(format!(
                "{} workers given; at most {MAX_WORKERS_PER_TAGGING} can be tagged at once",
                ids.len()
            )));
        }
        let field = |field: &str, e: crate::tags::TagError| ApiError::InvalidField {
            field: field.to_string(),
            message: e.to_string(),
        };
        TagChange::new(add, &[]).map_err(|e| field("add", e))?;
        let change = TagChange::new(add, remove).map_err(|e| field("remove", e))?;
        if change.add.is_empty() && change.remove.is_empty() {
            return Err(ApiError::BadRequest(
                "no tags to add or remove; give `add` and/or `remove`".into(),
            ));
        }
        let outcome = self.store().tag_workers(ids, &change).await?;
        for id in ids {
            self.worker_cache.forget(*id);
        }
        match outcome {
            TagOutcome::Changed(n) => {
                tracing::info!(
                    workers = ids.len(),
                    changed = n,
                    add = ?change.add,
                    remove = ?change.remove,
                    "tagged workers"
                );
                Ok(n)
            }
            TagOutcome::Unknown(unknown) => {
                let list: Vec<String> = unknown.iter().map(ToString::to_string).collect();
                Err(ApiError::NotFound(format!(
                    "unknown worker{} {}; nothing was changed",
                    if list.len() == 1 { "" } else { "s" },
                    list.join(", ")
                )))
            }
            TagOutcome::Refused(e) => Err(ApiError::InvalidField {
                field: "add".into(),
                message: format!("{e}; nothing was changed"),
            }),
        }
    }
}
