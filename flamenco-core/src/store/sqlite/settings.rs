//! The `settings` table: string values by key (e.g. `depsgraph_last_modified`).

use rusqlite::{Connection, OptionalExtension};

use super::rows::Db;
use super::SqliteStore;
use crate::store::StoreResult;

pub(super) fn get(conn: &Connection, key: &str) -> StoreResult<Option<String>> {
    conn.prepare_cached("SELECT value FROM settings WHERE key = ?1")
        .db()?
        .query_row([key], |row| row.get(0))
        .optional()
        .db()
}

/// Set, or with `None` remove, a setting.
pub(super) fn set(conn: &Connection, key: &str, value: Option<&str>) -> StoreResult<()> {
    match value {
        Some(value) => conn
            .prepare_cached(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .db()?
            .execute([key, value])
            .db()?,
        None => conn
            .prepare_cached("DELETE FROM settings WHERE key = ?1")
            .db()?
            .execute([key])
            .db()?,
    };
    Ok(())
}

#[async_trait::async_trait]
impl crate::store::SettingsStore for SqliteStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        let key = key.to_string();
        self.readers
            .run(move |c| super::settings::get(c, &key))
            .await
    }

    async fn set_setting(&self, key: &str, value: Option<&str>) -> StoreResult<()> {
        let key = key.to_string();
        let value = value.map(str::to_string);
        self.writer
            .run(move |c| super::settings::set(c, &key, value.as_deref()))
            .await
    }
}
