//! The last-rendered image: rendered frames become one small JPEG that the dashboard and
//! the `/latest-image` page show (manager-v2.md §9.3, with the bugs of §11 item 33 fixed).
//!
//! Paths come from two places: workers' `POST /output-produced` reports (through
//! [`Manager::output_produced`](crate::Manager::output_produced)) and, when
//! `watch_for_latest_image` is set, the folder watcher in [`watch`]. Both feed
//! [`LatestImages::submit`], a bounded queue (at most [`QUEUE_CAPACITY`] paths; when it is
//! full the oldest pending path is dropped and logged, so a caller never waits). One task
//! takes the paths in order and converts each on the blocking thread pool ([`convert`]:
//! decode PNG/JPEG/TIFF/EXR in-process with size limits, tone-map float images, scale to at
//! most 1920×1080, encode as JPEG). A path that cannot be converted is logged and skipped;
//! the previous image stays.
//!
//! The newest image is kept in memory ([`LatestImage`]: the JPEG bytes, a version counter,
//! an ETag) and written atomically to `<data_dir>/latest-image.jpg` (with its description in
//! `latest-image.json`), from where it is loaded again at the next start. New images are
//! announced to [`ImageEvents`] subscribers (the `/imagewatch` SSE stream). [`LatestImages::close`]
//! stops the pipeline and ends every subscription; submitting afterwards is a no-op.

pub mod convert;
pub mod watch;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

pub use convert::{ConvertError, ConvertLimits, Converted};

/// How many paths may wait for conversion; beyond that the oldest waiting path is dropped.
pub const QUEUE_CAPACITY: usize = 50;

/// The file the latest image is kept in, inside `data_dir`.
pub const IMAGE_FILE: &str = "latest-image.jpg";

/// The description of [`IMAGE_FILE`], inside `data_dir`.
pub const INFO_FILE: &str = "latest-image.json";

/// What is known about the latest image (`GET /api/latest-image`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestImageInfo {
    /// Counts up by one with each new image (from 1 at each start).
    pub version: u64,
    /// When the image was converted.
    pub updated: DateTime<Utc>,
    /// The rendered file it was made from, as reported or seen.
    pub source_path: String,
    /// Size of the JPEG, in pixels.
    pub width: u32,
    pub height: u32,
}

/// The latest image: its JPEG bytes and description.
#[derive(Clone, Debug)]
pub struct LatestImage {
    pub info: LatestImageInfo,
    /// The JPEG file's bytes.
    pub jpeg: Bytes,
    /// A strong HTTP entity tag for the bytes (quoted), derived from their SHA-256.
    pub etag: String,
}

impl LatestImage {
    fn new(info: LatestImageInfo, jpeg: Bytes) -> LatestImage {
        let digest = Sha256::digest(&jpeg);
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        LatestImage { info, jpeg, etag }
    }
}

/// The latest-image pipeline of one Manager. Cheap to share behind an `Arc`.
pub struct LatestImages {
    shared: Arc<Shared>,
}

struct Shared {
    data_dir: PathBuf,
    limits: ConvertLimits,
    queue: Mutex<VecDeque<PathBuf>>,
    wake: Notify,
    current: RwLock<Option<Arc<LatestImage>>>,
    announce: broadcast::Sender<u64>,
    closed: CancellationToken,
    worker_started: AtomicBool,
}

impl LatestImages {
    /// A pipeline that keeps its image in `data_dir`, with the default [`ConvertLimits`].
    /// Nothing is read yet: call [`LatestImages::load_persisted`] for the image of the
    /// previous run.
    pub fn new(data_dir: impl Into<PathBuf>) -> LatestImages {
        Self::with_limits(data_dir, ConvertLimits::default())
    }

    /// Like [`LatestImages::new`] with other decoding limits (tests, small machines).
    pub fn with_limits(data_dir: impl Into<PathBuf>, limits: ConvertLimits) -> LatestImages {
        let (announce, _) = broadcast::channel(16);
        LatestImages {
            shared: Arc::new(Shared {
                data_dir: data_dir.into(),
                limits,
                queue: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                current: RwLock::new(None),
                announce,
                closed: CancellationToken::new(),
                worker_started: AtomicBool::new(false),
            }),
        }
    }

    /// Load `<data_dir>/latest-image.jpg` from the previous run, if there is one and no
    /// image is known yet. A missing file is normal; an unreadable one is logged. Returns
    /// whether an image was loaded.
    pub fn load_persisted(&self) -> bool {
        if self.latest().is_some() {
            return false;
        }
        let path = self.image_path();
        let jpeg = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(e) => {
                tracing::warn!(
                    "cannot read the latest image of the previous run, {}: {e}; \
                     it is replaced by the next rendered image",
                    path.display()
                );
                return false;
            }
        };
        let (width, height) = match image::ImageReader::with_format(
            std::io::Cursor::new(&jpeg),
            image::ImageFormat::Jpeg,
        )
        .into_dimensions()
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(
                    "{} is not a readable JPEG ({e}); ignoring it until the next rendered image",
                    path.display()
                );
                return false;
            }
        };
        let saved: Option<Saved> = std::fs::read(self.info_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let updated = saved
            .as_ref()
            .map(|s| s.updated)
            .or_else(|| {
                std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .map(DateTime::<Utc>::from)
            })
            .unwrap_or_else(Utc::now);
        let source_path = saved
            .map(|s| s.source_path)
            .unwrap_or_else(|| path.display().to_string());
        let info = LatestImageInfo {
            version: 1,
            updated,
            source_path,
            width,
            height,
        };
        let mut current = self
            .shared
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if current.is_some() {
            return false;
        }
        *current = Some(Arc::new(LatestImage::new(info, Bytes::from(jpeg))));
        true
    }

    /// Where the latest image is kept: `<data_dir>/latest-image.jpg`.
    pub fn image_path(&self) -> PathBuf {
        self.shared.data_dir.join(IMAGE_FILE)
    }

    fn info_path(&self) -> PathBuf {
        self.shared.data_dir.join(INFO_FILE)
    }

    /// The latest image, if there is one.
    pub fn latest(&self) -> Option<Arc<LatestImage>> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The latest image's description, if there is one.
    pub fn info(&self) -> Option<LatestImageInfo> {
        self.latest().map(|i| i.info.clone())
    }

    /// Queue a rendered file for conversion. Never waits: when [`QUEUE_CAPACITY`] paths are
    /// already waiting, the oldest is dropped (and logged). A path already waiting is not
    /// queued twice. After [`LatestImages::close`] this does nothing.
    ///
    /// Must be called inside a Tokio runtime (the conversion task is started on the first
    /// call); outside one the path is logged and skipped.
    pub fn submit(&self, path: impl Into<PathBuf>) {
        let path = path.into();
        if self.shared.closed.is_cancelled() {
            tracing::debug!(path = %path.display(), "latest image: shutting down, path ignored");
            return;
        }
        if !self.ensure_worker() {
            tracing::warn!(
                path = %path.display(),
                "latest image: no async runtime to convert images in; path skipped"
            );
            return;
        }
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.contains(&path) {
                return;
            }
            if queue.len() >= QUEUE_CAPACITY {
                if let Some(dropped) = queue.pop_front() {
                    tracing::warn!(
                        dropped = %dropped.display(),
                        "latest image: {QUEUE_CAPACITY} images are waiting for conversion; \
                         skipping the oldest"
                    );
                }
            }
            queue.push_back(path);
        }
        self.shared.wake.notify_one();
    }

    /// How many paths wait for conversion (not counting the one being converted).
    pub fn pending(&self) -> usize {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Listen for new images. The subscription ends when the pipeline is closed; dropping
    /// it is all a listener needs to do to go away.
    pub fn subscribe(&self) -> ImageEvents {
        ImageEvents {
            rx: self.shared.announce.subscribe(),
            closed: self.shared.closed.clone(),
        }
    }

    /// Stop converting, drop the waiting paths and end every subscription. A conversion
    /// in progress finishes on its thread but is neither saved nor published. Idempotent.
    pub fn close(&self) {
        self.shared.closed.cancel();
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Whether [`LatestImages::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Start the conversion task on the current runtime, once.
    fn ensure_worker(&self) -> bool {
        if self.shared.worker_started.load(Ordering::Acquire) {
            return true;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if self
            .shared
            .worker_started
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            handle.spawn(run_conversions(self.shared.clone()));
        }
        true
    }
}

impl Drop for LatestImages {
    fn drop(&mut self) {
        // Ends the conversion task, which holds the shared state.
        self.shared.closed.cancel();
    }
}

/// A subscription to new images (see [`LatestImages::subscribe`]).
pub struct ImageEvents {
    rx: broadcast::Receiver<u64>,
    closed: CancellationToken,
}

impl ImageEvents {
    /// The version of the next new image; `None` once the pipeline is closed. A listener
    /// that fell behind gets one event for the images it missed.
    pub async fn next(&mut self) -> Option<u64> {
        loop {
            tokio::select! {
                biased;
                _ = self.closed.cancelled() => return None,
                got = self.rx.recv() => match got {
                    Ok(version) => return Some(version),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// The conversion task: one path at a time, each on the blocking pool.
async fn run_conversions(shared: Arc<Shared>) {
    loop {
        let path = tokio::select! {
            _ = shared.closed.cancelled() => break,
            path = next_path(&shared) => path,
        };
        let limits = shared.limits.clone();
        let data_dir = shared.data_dir.clone();
        let source = path.clone();
        let closed = shared.closed.clone();
        let job = tokio::task::spawn_blocking(move || {
            let converted = convert::convert_file(&source, &limits)?;
            if closed.is_cancelled() {
                return Err(ConvertError::Closed);
            }
            let saved = Saved {
                updated: Utc::now(),
                source_path: source.display().to_string(),
            };
            let persisted = persist(&data_dir, &converted.jpeg, &saved);
            Ok::<_, ConvertError>((converted, saved, persisted))
        });
        let outcome = tokio::select! {
            _ = shared.closed.cancelled() => break,
            outcome = job => outcome,
        };
        match outcome {
            Ok(Ok((converted, saved, persisted))) => {
                if let Err(e) = persisted {
                    tracing::warn!(
                        "latest image: cannot save it in {}: {e}; it is served from memory \
                         but will not survive a restart",
                        shared.data_dir.display()
                    );
                }
                publish(&shared, saved, converted);
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), "latest image: skipped: {e}");
            }
            Err(e) => {
                tracing::error!(path = %path.display(), "latest image: conversion failed: {e}");
            }
        }
    }
    tracing::debug!("latest image: conversion task stopped");
}

async fn next_path(shared: &Shared) -> PathBuf {
    loop {
        if let Some(path) = shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        {
            return path;
        }
        shared.wake.notified().await;
    }
}

fn publish(shared: &Shared, saved: Saved, converted: Converted) {
    let version = {
        let mut current = shared.current.write().unwrap_or_else(|e| e.into_inner());
        let version = current.as_ref().map_or(1, |c| c.info.version + 1);
        let info = LatestImageInfo {
            version,
            updated: saved.updated,
            source_path: saved.source_path,
            width: converted.width,
            height: converted.height,
        };
        tracing::info!(
            source = %info.source_path,
            version,
            width = info.width,
            height = info.height,
            "New image rendered: latest-image.jpg"
        );
        *current = Some(Arc::new(LatestImage::new(
            info,
            Bytes::from(converted.jpeg),
        )));
        version
    };
    // Having no listener is fine.
    let _ = shared.announce.send(version);
}

/// What `latest-image.json` keeps next to the JPEG.
#[derive(Serialize, Deserialize)]
struct Saved {
    updated: DateTime<Utc>,
    source_path: String,
}

fn persist(data_dir: &Path, jpeg: &[u8], saved: &Saved) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    write_atomically(&data_dir.join(IMAGE_FILE), jpeg)?;
    let json = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
    write_atomically(&data_dir.join(INFO_FILE), &json)
}

/// Write `bytes` to a temporary file next to `path`, then rename it over `path`, so a
/// reader (or a crash) never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests;
