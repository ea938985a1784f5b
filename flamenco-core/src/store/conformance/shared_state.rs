//! Conformance cases for the state all Managers share ([`crate::store::SharedStateStore`]):
//! the latest image is stored with a version that counts up, read back byte for byte, and
//! an image made from an older file does not replace a newer one.

use std::sync::Arc;

use super::at;
use crate::store::shared_state::MAX_SHARED_IMAGE_BYTES;
use crate::store::{ImagePut, NewSharedImage, Store};

fn image(name: &str, modified_ms: Option<i64>, bytes: &[u8]) -> NewSharedImage {
    NewSharedImage {
        updated: at(10_000),
        source_path: format!("/render/{name}"),
        source_modified: modified_ms.map(at),
        width: 64,
        height: 36,
        jpeg: bytes.to_vec(),
    }
}

/// Versions count up from 1; a newer (or equal, or unknown) source time replaces the image,
/// an older one is kept out; what is read is what was stored, bytes included.
pub async fn latest_image_versions_and_rule(store: Arc<dyn Store>) {
    assert_eq!(store.latest_image_version().await.expect("version"), None);
    assert_eq!(store.latest_image().await.expect("image"), None);

    // Every byte value, so no backend can get away with text.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(3_000).collect();
    let first = image("0001.png", Some(1_000), &bytes);
    assert_eq!(
        store.put_latest_image(&first).await.expect("put"),
        ImagePut::Stored { version: 1 }
    );
    assert_eq!(
        store.latest_image_version().await.expect("version"),
        Some(1)
    );
    let read = store.latest_image().await.expect("image").expect("stored");
    assert_eq!(read.version, 1);
    assert_eq!(read.image, first);

    // A later frame replaces it.
    let second = image("0002.png", Some(2_000), b"\xff\xd8second");
    assert_eq!(
        store.put_latest_image(&second).await.expect("put"),
        ImagePut::Stored { version: 2 }
    );
    // A late report of an earlier frame does not.
    let late = image("0000.png", Some(500), b"\xff\xd8late");
    assert_eq!(
        store.put_latest_image(&late).await.expect("put"),
        ImagePut::Kept { version: 2 }
    );
    let read = store.latest_image().await.expect("image").expect("stored");
    assert_eq!((read.version, &read.image), (2, &second));

    // The same frame again (equal time) and an image of unknown time both replace it.
    let again = image("0002.png", Some(2_000), b"\xff\xd8again");
    assert_eq!(
        store.put_latest_image(&again).await.expect("put"),
        ImagePut::Stored { version: 3 }
    );
    let unknown = image("watched.exr", None, b"\xff\xd8unknown");
    assert_eq!(
        store.put_latest_image(&unknown).await.expect("put"),
        ImagePut::Stored { version: 4 }
    );
    let read = store.latest_image().await.expect("image").expect("stored");
    assert_eq!((read.version, &read.image), (4, &unknown));
    assert_eq!(
        store.latest_image_version().await.expect("version"),
        Some(4)
    );

    // Too large: refused with a reason, and nothing changes.
    let huge = image(
        "huge.png",
        Some(9_000),
        &vec![0u8; MAX_SHARED_IMAGE_BYTES + 1],
    );
    let err = store.put_latest_image(&huge).await.expect_err("too large");
    assert!(err.to_string().contains("bytes"), "{err}");
    assert_eq!(
        store.latest_image_version().await.expect("version"),
        Some(4)
    );
}
