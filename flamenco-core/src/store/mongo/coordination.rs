//! The `manager_leases` collection: the MongoDB side of
//! [`crate::store::coordination::CoordinationStore`]. One document per lease, `_id` its name
//! (`leader`): `holder`, `acquired`, `expires`, `term`, `released`, and `asked` (the server's
//! time of the latest attempt, so an answer carries the server's clock).
//!
//! Taking or renewing is one `findAndModify` with upsert and an update pipeline that applies
//! [`next_lease`](crate::store::coordination::next_lease) on the document as the server
//! holds it, with the server's `$$NOW`: expiry is judged on one clock, the database
//! server's, never on the Managers' own. A document is changed atomically, so two Managers
//! asking at once are serialised; two *inserting* the first document at once make one of
//! them fail with a duplicate key, and it asks again (the document exists then).

use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};

use super::codec::Fields;
use super::errors::{self, Mongo};
use crate::store::coordination::Lease;
use crate::store::StoreResult;

/// The collection's name.
pub(super) const LEASES: &str = "manager_leases";

fn coll(db: &Database) -> Collection<Document> {
    db.collection(LEASES)
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The update pipeline of an attempt by `holder` for `ms` milliseconds: the same rule as
/// [`crate::store::coordination::next_lease`], in the server's expression language.
fn attempt_pipeline(holder: &str, ms: i64) -> Vec<Document> {
    let me = doc! { "$literal": holder };
    // A renewal: the holder asks again and has not released it (even if it expired, as
    // long as nobody took it in between).
    let renewal = doc! { "$and": [
        { "$eq": ["$holder", me.clone()] },
        { "$ne": ["$released", true] },
    ] };
    // Free: never taken (a new document), released, or expired on the server's clock.
    // Times are compared as milliseconds ($toLong): SecantusDB compares a stored date with
    // `$$NOW` wrongly, and MongoDB gives the same answer either way.
    let free = doc! { "$or": [
        { "$eq": [{ "$ifNull": ["$holder", Bson::Null] }, Bson::Null] },
        { "$eq": ["$released", true] },
        { "$lte": [
            { "$ifNull": [{ "$toLong": "$expires" }, 0_i64] },
            { "$toLong": "$$NOW" },
        ] },
    ] };
    vec![
        doc! { "$set": {
            "_renew": renewal.clone(),
            "_take": { "$or": [renewal, free] },
        } },
        doc! { "$set": {
            "term": { "$cond": ["$_renew", "$term",
                { "$cond": ["$_take", { "$add": [{ "$ifNull": ["$term", 0_i64] }, 1_i64] }, "$term"] }] },
            "acquired": { "$cond": ["$_renew", "$acquired",
                { "$cond": ["$_take", "$$NOW", "$acquired"] }] },
            "holder": { "$cond": ["$_take", me, "$holder"] },
            "expires": { "$cond": ["$_take", { "$add": ["$$NOW", ms] }, "$expires"] },
            "released": { "$cond": ["$_take", false, "$released"] },
            "asked": "$$NOW",
        } },
        doc! { "$unset": ["_renew", "_take"] },
    ]
}

fn from_doc(d: &Document) -> StoreResult<Lease> {
    let f = Fields::new(d, LEASES);
    Ok(Lease {
        name: d.get_str("_id").unwrap_or_default().to_string(),
        holder: f.string("holder")?,
        acquired: f.opt_time("acquired")?,
        expires: f.opt_time("expires")?,
        term: f.i64("term")?,
        store_now: f.opt_time("asked")?,
        released: d.get_bool("released").unwrap_or(false),
    })
}

pub(super) async fn acquire(
    db: &Database,
    name: &str,
    holder: &str,
    duration: std::time::Duration,
) -> StoreResult<Lease> {
    let pipeline = attempt_pipeline(holder, millis(duration));
    for attempt in 0..3 {
        let answer = coll(db)
            .find_one_and_update(doc! { "_id": name }, pipeline.clone())
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match answer {
            Ok(Some(d)) => return from_doc(&d),
            // An upsert racing another's insert may come back empty (SecantusDB) or with a
            // duplicate key (MongoDB): the document exists now; ask again.
            Ok(None) if attempt < 2 => continue,
            Err(e) if attempt < 2 && errors::duplicate_index(&e).is_some() => continue,
            Ok(None) => break,
            Err(e) => return Err(errors::map_err(e)),
        }
    }
    Err(crate::store::StoreError::Other(format!(
        "MongoDB: {LEASES}: lease {name} could be neither inserted nor updated"
    )))
}

pub(super) async fn release(db: &Database, name: &str, holder: &str) -> StoreResult<bool> {
    let done = coll(db)
        .update_one(
            doc! { "_id": name, "holder": holder, "released": { "$ne": true } },
            vec![doc! { "$set": {
                "released": true,
                "expires": "$$NOW",
                "asked": "$$NOW",
            } }],
        )
        .await
        .db()?;
    Ok(done.matched_count == 1)
}

pub(super) async fn current(db: &Database, name: &str) -> StoreResult<Option<Lease>> {
    use futures::TryStreamExt;
    let mut cursor = coll(db)
        .aggregate(vec![
            doc! { "$match": { "_id": name } },
            doc! { "$set": { "asked": "$$NOW" } },
        ])
        .await
        .db()?;
    match cursor.try_next().await.db()? {
        Some(d) => from_doc(&d).map(Some),
        None => Ok(None),
    }
}
