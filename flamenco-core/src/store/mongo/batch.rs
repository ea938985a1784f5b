//! Many updates of one collection in ONE `update` command (one round trip), for the
//! deferred writes that need no answer per document: the "seen" flush's workers and
//! may-i-run pings (`crate::seen`, docs/performance.md "MongoDB commands per worker
//! request").
//!
//! The driver's `bulk_write` needs MongoDB 8.0's `bulkWrite` command; the `update`
//! command has taken a list of statements since MongoDB 2.6, so this sends it directly,
//! with the collection's write concern, and reads the reply's write errors itself.

use mongodb::bson::{doc, Bson, Document};
use mongodb::Collection;

use super::errors::{reply_error, Mongo};
use crate::store::{StoreError, StoreResult};

/// Statements per command: far below the server's `maxWriteBatchSize` (100,000) and, at
/// a few hundred bytes each, below the 16 MiB command size.
const STATEMENTS_PER_COMMAND: usize = 1_000;

/// One update statement: its filter and its update (one document each, no upsert).
pub(super) struct Statement {
    pub filter: Document,
    pub update: Document,
}

/// Run `statements` in order (one command per [`STATEMENTS_PER_COMMAND`]); the number
/// of documents they matched (`n` of the replies). The first write error, or a write
/// concern error, is returned as the store's error.
pub(super) async fn update_each(
    coll: &Collection<Document>,
    statements: Vec<Statement>,
) -> StoreResult<u64> {
    let ns = coll.namespace();
    let write_concern = match coll.write_concern() {
        Some(wc) => Some(mongodb::bson::serialize_to_document(wc).map_err(|e| {
            StoreError::Other(format!(
                "the write concern could not be encoded for a batched update: {e}"
            ))
        })?),
        None => None,
    };
    let db = coll.client().database(&ns.db);
    let mut matched = 0;
    let mut statements = statements.into_iter().peekable();
    while statements.peek().is_some() {
        let updates: Vec<Bson> = statements
            .by_ref()
            .take(STATEMENTS_PER_COMMAND)
            .map(|s| Bson::Document(doc! { "q": s.filter, "u": s.update }))
            .collect();
        let mut command = doc! { "update": ns.coll.as_str(), "updates": updates, "ordered": true };
        if let Some(wc) = &write_concern {
            command.insert("writeConcern", wc.clone());
        }
        let reply = db.run_command(command).await.db()?;
        if let Ok(errors) = reply.get_array("writeErrors") {
            if let Some(Bson::Document(first)) = errors.first() {
                return Err(reply_error(first));
            }
        }
        if let Ok(wc_error) = reply.get_document("writeConcernError") {
            return Err(reply_error(wc_error));
        }
        matched += match reply.get("n") {
            Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
            Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
            Some(Bson::Double(n)) if *n >= 0.0 => *n as u64,
            _ => 0,
        };
    }
    Ok(matched)
}
