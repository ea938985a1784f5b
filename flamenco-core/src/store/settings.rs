//! [`SettingsStore`]: small persistent key/value settings.
//!
//! One concern of the [`super::Store`] trait, implemented by each backend in its file of the
//! same name (`sqlite/settings.rs`, `mongo/settings.rs`) and timed by [`super::InstrumentedStore`].

use super::StoreResult;
use async_trait::async_trait;

/// Small persistent key/value settings.
#[async_trait]
pub trait SettingsStore: Send + Sync {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<String>>;

    /// Set (or with `None`, clear) a setting.
    async fn set_setting(&self, key: &str, value: Option<&str>) -> StoreResult<()>;
}
