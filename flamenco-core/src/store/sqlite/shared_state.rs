//! The SQLite side of [`crate::store::shared_state::SharedStateStore`], in two rows of the
//! `settings` table (no schema change): `latest_image` (the description and version, JSON)
//! and `latest_image_jpeg` (the bytes, base64). Storing is one write transaction: read the
//! description, apply [`image_replaces`], write both rows. The embedded store has one
//! Manager, so this is the same code path as MongoDB's rather than a shared one.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::rows::Db;
use super::SqliteStore;
use crate::store::shared_state::{
    check_image_size, image_replaces, ImagePut, NewSharedImage, SharedImage, SharedStateStore,
};
use crate::store::{StoreError, StoreResult};

/// The description's settings key.
const META: &str = "latest_image";
/// The bytes' settings key.
const JPEG: &str = "latest_image_jpeg";

#[derive(Serialize, Deserialize)]
struct Meta {
    version: u64,
    updated: DateTime<Utc>,
    source_path: String,
    source_modified: Option<DateTime<Utc>>,
    width: u32,
    height: u32,
}

fn read(conn: &Connection, key: &str) -> StoreResult<Option<String>> {
    conn.prepare_cached("SELECT value FROM settings WHERE key = ?1")
        .db()?
        .query_row([key], |row| row.get(0))
        .optional()
        .db()
}

fn write(conn: &Connection, key: &str, value: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO settings (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .db()?
    .execute([key, value])
    .db()?;
    Ok(())
}

fn meta(conn: &Connection) -> StoreResult<Option<Meta>> {
    read(conn, META)?
        .map(|text| {
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("setting {META}: {e}")))
        })
        .transpose()
}

fn put(conn: &Connection, image: &NewSharedImage) -> StoreResult<ImagePut> {
    let current = meta(conn)?;
    if let Some(c) = &current {
        if !image_replaces(c.source_modified, image.source_modified) {
            return Ok(ImagePut::Kept { version: c.version });
        }
    }
    let version = current.map_or(1, |c| c.version + 1);
    let meta = Meta {
        version,
        updated: image.updated,
        source_path: image.source_path.clone(),
        source_modified: image.source_modified,
        width: image.width,
        height: image.height,
    };
    let json = serde_json::to_string(&meta).map_err(|e| StoreError::Other(e.to_string()))?;
    write(conn, META, &json)?;
    write(conn, JPEG, &STANDARD.encode(&image.jpeg))?;
    Ok(ImagePut::Stored { version })
}

fn image(conn: &Connection) -> StoreResult<Option<SharedImage>> {
    let Some(meta) = meta(conn)? else {
        return Ok(None);
    };
    let text = read(conn, JPEG)?
        .ok_or_else(|| StoreError::Corrupt(format!("setting {JPEG} is missing")))?;
    let jpeg = STANDARD
        .decode(text.as_bytes())
        .map_err(|e| StoreError::Corrupt(format!("setting {JPEG}: {e}")))?;
    Ok(Some(SharedImage {
        version: meta.version,
        image: NewSharedImage {
            updated: meta.updated,
            source_path: meta.source_path,
            source_modified: meta.source_modified,
            width: meta.width,
            height: meta.height,
            jpeg,
        },
    }))
}

#[async_trait::async_trait]
impl SharedStateStore for SqliteStore {
    async fn put_latest_image(&self, image: &NewSharedImage) -> StoreResult<ImagePut> {
        check_image_size(image)?;
        let image = image.clone();
        self.writer.run(move |c| put(c, &image)).await
    }

    async fn latest_image_version(&self) -> StoreResult<Option<u64>> {
        self.readers.run(|c| Ok(meta(c)?.map(|m| m.version))).await
    }

    async fn latest_image(&self) -> StoreResult<Option<SharedImage>> {
        self.readers.run(image).await
    }
}
