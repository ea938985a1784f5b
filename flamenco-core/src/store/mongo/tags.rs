//! Worker tags on `flamenco_workers` (the `tags` array, ours; v2 ignores it): the MongoDB
//! side of [`crate::store::TagStore`]. One read of every named worker, then one
//! compare-and-set per worker whose list changes (filtered on the list read, so a
//! concurrent change is re-read and re-applied instead of lost).

use std::collections::BTreeMap;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::codec::{oid, Fields, WORKERS};
use super::errors::Mongo;
use super::protocol::CAS_ATTEMPTS;
use super::Db;
use crate::model::ObjectId;
use crate::store::{StoreError, StoreResult, TagOutcome};
use crate::tags::TagChange;

fn tags_bson(tags: &[String]) -> Bson {
    Bson::Array(tags.iter().map(|t| Bson::String(t.clone())).collect())
}

/// The filter "this worker, with exactly these tags" (none: the field missing or empty).
fn unchanged(id: ObjectId, tags: &[String]) -> Document {
    if tags.is_empty() {
        doc! { "_id": oid(id), "$or": [ { "tags": { "$exists": false } }, { "tags": [] } ] }
    } else {
        doc! { "_id": oid(id), "tags": tags_bson(tags) }
    }
}

async fn read_tags(db: &Db, ids: &[ObjectId]) -> StoreResult<BTreeMap<ObjectId, Vec<String>>> {
    let list: Vec<Bson> = ids.iter().map(|id| oid(*id)).collect();
    let docs: Vec<Document> = db
        .workers
        .find(doc! { "_id": { "$in": list } })
        .projection(doc! { "_id": 1, "tags": 1 })
        .await
        .db()?
        .try_collect()
        .await
        .db()?;
    docs.iter()
        .map(|d| {
            let f = Fields::new(d, WORKERS);
            Ok((f.id("_id")?, f.string_list("tags")?))
        })
        .collect()
}

/// `TagStore::tag_workers`.
pub(super) async fn tag_workers(
    db: &Db,
    ids: &[ObjectId],
    change: &TagChange,
) -> StoreResult<TagOutcome> {
    let current = read_tags(db, ids).await?;
    let unknown: Vec<ObjectId> = ids
        .iter()
        .filter(|id| !current.contains_key(id))
        .copied()
        .collect();
    if !unknown.is_empty() {
        return Ok(TagOutcome::Unknown(unknown));
    }
    let mut planned: Vec<(ObjectId, Vec<String>, Vec<String>)> = Vec::new();
    for (id, tags) in &current {
        match change.apply_checked(&id.to_string(), tags) {
            Ok(Some(new)) => planned.push((*id, tags.clone(), new)),
            Ok(None) => {}
            Err(e) => return Ok(TagOutcome::Refused(e)),
        }
    }
    let mut changed = 0;
    for (id, mut before, mut after) in planned {
        let mut done = false;
        for _ in 0..CAS_ATTEMPTS {
            let result = db
                .workers
                .update_one(
                    unchanged(id, &before),
                    doc! { "$set": { "tags": tags_bson(&after) } },
                )
                .await
                .db()?;
            if result.matched_count > 0 {
                changed += 1;
                done = true;
                break;
            }
            // Changed meanwhile (or forgotten): apply the change to what is there now.
            let Some(now) = read_tags(db, &[id]).await?.remove(&id) else {
                done = true;
                break;
            };
            match change.apply_checked(&id.to_string(), &now) {
                Ok(Some(new)) => (before, after) = (now, new),
                Ok(None) => {
                    done = true;
                    break;
                }
                Err(e) => return Ok(TagOutcome::Refused(e)),
            }
        }
        if !done {
            return Err(StoreError::Unavailable(format!(
                "the tags of worker {id} kept changing while this request tried to change \
                 them; try again"
            )));
        }
    }
    Ok(TagOutcome::Changed(changed))
}
