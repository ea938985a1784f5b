//! The `latest_image` collection: the MongoDB side of
//! [`crate::store::shared_state::SharedStateStore`]. One document, `_id: "latest"`:
//! `version`, `updated`, `source_path`, `source_modified`, `width`, `height` and `jpeg`
//! (binary, at most [`MAX_SHARED_IMAGE_BYTES`]).
//!
//! Storing is a read of the stored description (without the bytes), the rule
//! [`image_replaces`], then a compare-and-set on the version read (or an insert of the first
//! document); when another Manager stored an image in between, it is decided again. Every
//! Manager reads the version alone (one small `find` with a projection) every
//! [`crate::latest_image::FOLLOW_PERIOD`], and the bytes only when the version changed.

use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, Document};
use mongodb::{Collection, Database};

use super::codec::{self, Fields};
use super::errors::{self, Mongo};
use super::MongoStore;
use crate::store::shared_state::{
    check_image_size, image_replaces, ImagePut, NewSharedImage, SharedImage, SharedStateStore,
};
use crate::store::{StoreError, StoreResult};

#[cfg(doc)]
use crate::store::shared_state::MAX_SHARED_IMAGE_BYTES;

/// The collection's name.
pub(super) const LATEST_IMAGE: &str = "latest_image";

/// The one document's `_id`.
const ID: &str = "latest";

/// How many times a store is decided again after losing a race with another Manager.
const ATTEMPTS: usize = 5;

fn coll(db: &Database) -> Collection<Document> {
    db.collection(LATEST_IMAGE)
}

fn u64_of(f: &Fields<'_>, field: &str) -> StoreResult<u64> {
    let v = f.i64(field)?;
    u64::try_from(v).map_err(|_| f.corrupt(field, format!("negative: {v}")))
}

fn u32_of(f: &Fields<'_>, field: &str) -> StoreResult<u32> {
    let v = f.i64(field)?;
    u32::try_from(v).map_err(|_| f.corrupt(field, format!("out of range: {v}")))
}

fn fields_doc(version: u64, image: &NewSharedImage) -> Document {
    doc! {
        "version": codec::int(i64::try_from(version).unwrap_or(i64::MAX)),
        "updated": codec::date(image.updated),
        "source_path": image.source_path.as_str(),
        "source_modified": image.source_modified.map_or(Bson::Null, codec::date),
        "width": i64::from(image.width),
        "height": i64::from(image.height),
        "jpeg": Binary { subtype: BinarySubtype::Generic, bytes: image.jpeg.clone() },
    }
}

async fn put(db: &Database, image: &NewSharedImage) -> StoreResult<ImagePut> {
    check_image_size(image)?;
    for _ in 0..ATTEMPTS {
        let current = coll(db)
            .find_one(doc! { "_id": ID })
            .projection(doc! { "version": 1, "source_modified": 1 })
            .await
            .db()?;
        match current {
            Some(d) => {
                let f = Fields::new(&d, LATEST_IMAGE);
                let version = u64_of(&f, "version")?;
                if !image_replaces(f.opt_time("source_modified")?, image.source_modified) {
                    return Ok(ImagePut::Kept { version });
                }
                let next = version + 1;
                let done = coll(db)
                    .update_one(
                        doc! { "_id": ID, "version": codec::int(version as i64) },
                        doc! { "$set": fields_doc(next, image) },
                    )
                    .await
                    .db()?;
                if done.matched_count == 1 {
                    return Ok(ImagePut::Stored { version: next });
                }
            }
            None => {
                let mut d = doc! { "_id": ID };
                d.extend(fields_doc(1, image));
                match coll(db).insert_one(d).await {
                    Ok(_) => return Ok(ImagePut::Stored { version: 1 }),
                    // Another Manager stored the first image meanwhile: decide again.
                    Err(e) if errors::duplicate_index(&e).is_some() => {}
                    Err(e) => return Err(errors::map_err(e)),
                }
            }
        }
    }
    Err(StoreError::Unavailable(format!(
        "MongoDB: {LATEST_IMAGE}: other Managers stored {ATTEMPTS} images while this one \
         tried to store its own; the next image will be tried again"
    )))
}

async fn version(db: &Database) -> StoreResult<Option<u64>> {
    let d = coll(db)
        .find_one(doc! { "_id": ID })
        .projection(doc! { "version": 1 })
        .await
        .db()?;
    d.map(|d| u64_of(&Fields::new(&d, LATEST_IMAGE), "version"))
        .transpose()
}

async fn image(db: &Database) -> StoreResult<Option<SharedImage>> {
    let Some(d) = coll(db).find_one(doc! { "_id": ID }).await.db()? else {
        return Ok(None);
    };
    let f = Fields::new(&d, LATEST_IMAGE);
    let jpeg = match d.get("jpeg") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        other => return Err(f.corrupt("jpeg", format!("not binary data: {other:?}"))),
    };
    Ok(Some(SharedImage {
        version: u64_of(&f, "version")?,
        image: NewSharedImage {
            updated: f
                .opt_time("updated")?
                .ok_or_else(|| f.corrupt("updated", "missing"))?,
            source_path: f.string("source_path")?,
            source_modified: f.opt_time("source_modified")?,
            width: u32_of(&f, "width")?,
            height: u32_of(&f, "height")?,
            jpeg,
        },
    }))
}

#[async_trait::async_trait]
impl SharedStateStore for MongoStore {
    async fn put_latest_image(&self, image: &NewSharedImage) -> StoreResult<ImagePut> {
        self.run(put(&self.database, image)).await
    }

    async fn latest_image_version(&self) -> StoreResult<Option<u64>> {
        self.run(version(&self.database)).await
    }

    async fn latest_image(&self) -> StoreResult<Option<SharedImage>> {
        self.run(image(&self.database)).await
    }
}
