//! State every Manager of a site must show the same (docs/operations.md, "What is shared
//! between Managers"): the [`SharedStateStore`] trait, a supertrait of
//! [`crate::store::Store`] (backends in `sqlite/shared_state.rs`, two rows of the `settings`
//! table, and `mongo/shared_state.rs`, the one-document collection `latest_image`).
//!
//! Today that is the latest image: the JPEG one Manager converted from a worker's
//! `/output-produced` report (or its watched folder) is stored here, and every Manager
//! serves what the store holds ([`crate::latest_image`], which checks the stored version
//! every [`crate::latest_image::FOLLOW_PERIOD`]). The rule both backends follow is
//! [`image_replaces`]: a newer rendered file replaces the stored image, an older one (a
//! late report of an earlier frame) does not. The version counts up in the store, so every
//! Manager shows the same version for the same image.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{StoreError, StoreResult};

/// The largest JPEG the store keeps (bytes). A converted image is at most 1920×1080 and
/// usually well under 1 MiB; this bound keeps one MongoDB document far below its 16 MiB
/// limit whatever the encoder does.
pub const MAX_SHARED_IMAGE_BYTES: usize = 8 * 1024 * 1024;

/// A newly converted image, to be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSharedImage {
    /// When it was converted.
    pub updated: DateTime<Utc>,
    /// The rendered file it was made from.
    pub source_path: String,
    /// That file's modification time, when known ([`image_replaces`] compares them).
    pub source_modified: Option<DateTime<Utc>>,
    pub width: u32,
    pub height: u32,
    /// The JPEG file's bytes (at most [`MAX_SHARED_IMAGE_BYTES`]).
    pub jpeg: Vec<u8>,
}

/// The stored latest image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedImage {
    /// Counts up by one with each image stored (from 1 in a new store).
    pub version: u64,
    pub image: NewSharedImage,
}

/// What [`SharedStateStore::put_latest_image`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePut {
    /// Stored, as this version.
    Stored { version: u64 },
    /// Not stored: the stored image (this version) was made from a newer file.
    Kept { version: u64 },
}

/// The rule: does an image made from a file modified at `new` replace the stored one, made
/// from a file modified at `current`? Yes unless both times are known and `new` is earlier
/// (a late report of an earlier frame, or the previous render of a shot). Equal times
/// replace: the same frame rendered again.
pub fn image_replaces(current: Option<DateTime<Utc>>, new: Option<DateTime<Utc>>) -> bool {
    match (current, new) {
        (Some(current), Some(new)) => new >= current,
        _ => true,
    }
}

/// The refusal of an image too large to store.
pub fn check_image_size(image: &NewSharedImage) -> StoreResult<()> {
    if image.jpeg.len() > MAX_SHARED_IMAGE_BYTES {
        return Err(StoreError::Other(format!(
            "the latest image is {} bytes, more than the {MAX_SHARED_IMAGE_BYTES} bytes the \
             store keeps; it is shown by this Manager only",
            image.jpeg.len()
        )));
    }
    Ok(())
}

/// Storage of the state all Managers share.
#[async_trait]
pub trait SharedStateStore: Send + Sync {
    /// Store a new latest image unless the stored one was made from a newer file
    /// ([`image_replaces`]), as one atomic change: on SQLite one transaction, on MongoDB a
    /// compare-and-set on the stored version (repeated if another Manager stored one in
    /// between). An image over [`MAX_SHARED_IMAGE_BYTES`] is refused with an error.
    async fn put_latest_image(&self, image: &NewSharedImage) -> StoreResult<ImagePut>;

    /// The stored image's version, without its bytes (cheap: what each Manager checks
    /// periodically); `None` when no image was stored yet.
    async fn latest_image_version(&self) -> StoreResult<Option<u64>>;

    /// The stored image, bytes included.
    async fn latest_image(&self) -> StoreResult<Option<SharedImage>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(1_700_000_000 + s, 0)
    }

    #[test]
    fn newer_or_equal_files_replace_older_ones_do_not() {
        assert!(image_replaces(t(0), t(1)));
        assert!(image_replaces(t(1), t(1)));
        assert!(!image_replaces(t(1), t(0)));
        // Unknown times cannot be compared: the new image wins.
        assert!(image_replaces(None, t(0)));
        assert!(image_replaces(t(0), None));
        assert!(image_replaces(None, None));
    }

    #[test]
    fn oversized_images_are_refused_with_a_reason() {
        let mut image = NewSharedImage {
            updated: Utc::now(),
            source_path: "/render/0001.png".into(),
            source_modified: None,
            width: 1,
            height: 1,
            jpeg: vec![0; MAX_SHARED_IMAGE_BYTES],
        };
        assert!(check_image_size(&image).is_ok());
        image.jpeg.push(0);
        let err = check_image_size(&image).expect_err("too large");
        assert!(
            err.to_string().contains("shown by this Manager only"),
            "{err}"
        );
    }
}
