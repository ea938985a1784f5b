//! The `settings` collection: as in v2 (§3.6), ONE document holding every setting as a
//! field (`depsgraph_last_modified`, …), found with an empty query. A `null` field reads
//! as "not set". Should a race between two Managers' first writes ever leave two
//! documents, the oldest (`_id` order) is the one read and written.

use mongodb::bson::{doc, Document};

use super::codec::{self, Fields};
use super::errors::Mongo;
use super::Db;
use super::MongoStore;
use crate::store::{StoreError, StoreResult};

/// Setting names are field names: no `$` prefix, no dots, not `_id`.
fn check_key(key: &str) -> StoreResult<()> {
    if key.is_empty() || key.starts_with('$') || key.contains('.') || key == "_id" {
        return Err(StoreError::Other(format!(
            "invalid setting name {key:?} (it is stored as a field of the settings document)"
        )));
    }
    Ok(())
}

async fn document(db: &Db) -> StoreResult<Option<Document>> {
    db.settings
        .find_one(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .db()
}

pub(super) async fn get(db: &Db, key: &str) -> StoreResult<Option<String>> {
    check_key(key)?;
    match document(db).await? {
        Some(d) => Fields::new(&d, codec::SETTINGS).opt_string(key),
        None => Ok(None),
    }
}

/// Set, or with `None` remove, a setting.
pub(super) async fn set(db: &Db, key: &str, value: Option<&str>) -> StoreResult<()> {
    check_key(key)?;
    let update = match value {
        Some(v) => doc! { "$set": { key: v } },
        None => doc! { "$unset": { key: "" } },
    };
    let filter = match document(db).await? {
        Some(d) => match d.get("_id") {
            Some(id) => doc! { "_id": id.clone() },
            None => doc! {},
        },
        // No document yet: v2's upsert with an empty selector creates it.
        None if value.is_none() => return Ok(()),
        None => doc! {},
    };
    db.settings
        .update_one(filter, update)
        .upsert(true)
        .await
        .db()?;
    Ok(())
}

#[async_trait::async_trait]
impl crate::store::SettingsStore for MongoStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        self.run(super::settings::get(&self.db, key)).await
    }

    async fn set_setting(&self, key: &str, value: Option<&str>) -> StoreResult<()> {
        self.run(super::settings::set(&self.db, key, value)).await
    }
}
