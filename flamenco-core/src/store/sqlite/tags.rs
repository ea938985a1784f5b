//! Worker tags on the `workers` table (`tags`, a JSON array, schema version 11): the
//! SQLite side of [`crate::store::TagStore`]. One write job, so one transaction: every
//! worker is read and checked first, then the changed lists are written.

use rusqlite::{params, Connection};

use super::rows::{blob, to_json, Db};
use crate::model::ObjectId;
use crate::store::{StoreError, StoreResult, TagOutcome};
use crate::tags::TagChange;

/// `TagStore::tag_workers`.
pub(super) fn tag_workers(
    conn: &Connection,
    ids: &[ObjectId],
    change: &TagChange,
) -> StoreResult<TagOutcome> {
    let mut read = conn
        .prepare_cached("SELECT tags FROM workers WHERE id = ?1")
        .db()?;
    let mut unknown = Vec::new();
    let mut planned: Vec<(ObjectId, Vec<String>)> = Vec::new();
    let mut refused = None;
    let mut seen = std::collections::BTreeSet::new();
    for &id in ids {
        if !seen.insert(id) {
            continue;
        }
        let mut rows = read.query(params![blob(id)]).db()?;
        let Some(row) = rows.next().db()? else {
            unknown.push(id);
            continue;
        };
        let text: String = row.get(0).db()?;
        let current: Vec<String> = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("column workers.tags of worker {id}: {e}")))?;
        match change.apply_checked(&id.to_string(), &current) {
            Ok(Some(new)) => planned.push((id, new)),
            Ok(None) => {}
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    // Unknown ids first, then limits: as the MongoDB store answers.
    if !unknown.is_empty() {
        return Ok(TagOutcome::Unknown(unknown));
    }
    if let Some(e) = refused {
        return Ok(TagOutcome::Refused(e));
    }
    let mut write = conn
        .prepare_cached("UPDATE workers SET tags = ?2 WHERE id = ?1")
        .db()?;
    for (id, tags) in &planned {
        write.execute(params![blob(*id), to_json(tags)?]).db()?;
    }
    Ok(TagOutcome::Changed(planned.len() as u64))
}
