//! The last-rendered image: rendered frames become one small JPEG that the dashboard and
//! the `/latest-image` page show (manager-v2.md §9.3, with the bugs of §11 item 33 fixed).
//!
//! Paths come from two places: workers' `POST /output-produced` reports (through
//! [`LatestImages::submit_report`], which logs one summary line per report) and, when
//! `watch_for_latest_image` is set, the folder watcher in [`watch`]. Both feed a bounded
//! queue ([`queue`]: at most [`QUEUE_CAPACITY`] paths and [`QUEUE_MAX_BYTES`] bytes; when it
//! is full the oldest waiting path is dropped, so a caller never waits).
//!
//! One task takes the paths in order. Each conversion runs on a thread of its own (not the
//! runtime's blocking pool, which the store and bcrypt need) with a time limit
//! ([`ConvertLimits::max_duration`]): a conversion that overruns it (a hung network mount)
//! is abandoned and the next path is taken; at most [`MAX_CONVERSION_THREADS`] threads exist
//! at once, abandoned ones included. On that thread: only a regular file is read (a FIFO,
//! socket or device is skipped), a file already converted under any name ([`recent`]: same
//! file name, size and modification time, e.g. after `move-to-final` renamed its folder) is
//! skipped, a file written before the current image's file (by modification time) is
//! skipped, so a late or renamed old frame never replaces a newer one, and the rest is
//! [`convert`]ed (decode PNG/JPEG/TIFF/EXR in-process with size
//! limits, tone-map float images, scale to at most 1920×1080, encode as JPEG). A path that
//! cannot be converted is skipped and the previous image stays; these skips are logged in
//! summary ([`skips`]), never one line per path without bound.
//!
//! The newest image is kept in memory ([`LatestImage`]: the JPEG bytes, a version counter,
//! an ETag) and written atomically to `<data_dir>/latest-image.jpg` (with its description in
//! `latest-image.json`), from where it is loaded again at the next start. New images are
//! announced to [`ImageEvents`] subscribers (the `/imagewatch` SSE stream). [`LatestImages::close`]
//! stops the pipeline at once and ends every subscription (it never waits for a
//! conversion); submitting afterwards is a no-op. [`LatestImages::stats`] counts what the
//! pipeline did.
//!
//! **Shared between Managers.** Given a store ([`LatestImages::share_through`], which the
//! [`crate::Manager`] does), each new image is also stored there
//! ([`crate::store::SharedStateStore::put_latest_image`], which keeps a newer one) and
//! shown with the store's version; [`LatestImages::follow_store`], run every
//! [`FOLLOW_PERIOD`] on every Manager, adopts an image another Manager stored. So every
//! Manager behind a load balancer serves the same image within [`FOLLOW_PERIOD`] (plus the
//! store's answer), with the same version and ETag. The embedded store runs the same code.

pub mod convert;
mod queue;
pub mod recent;
mod report;
pub mod skips;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, oneshot, Notify};
use tokio_util::sync::CancellationToken;

pub use convert::{ConvertError, ConvertLimits, Converted};
pub use queue::{QUEUE_CAPACITY, QUEUE_MAX_BYTES};
pub use report::ReportSummary;

use crate::store::{ImagePut, NewSharedImage, SharedImage, Store};
use queue::{PathQueue, Pushed};
use recent::{FileIdentity, RecentFiles};
use skips::SkipLog;

/// At most this many conversion threads exist at once, abandoned (timed-out) ones included.
/// When that many are stuck, the next conversion waits for one of them to end (the queue
/// stays bounded meanwhile) and this is logged once.
pub const MAX_CONVERSION_THREADS: usize = 3;

/// A file whose modification time is later than now by more than this (a skewed clock) is
/// shown, but does not become the time later files must not be older than.
const FUTURE_TOLERANCE: Duration = Duration::from_secs(60);

/// How often every Manager checks the store for an image another Manager stored
/// ([`LatestImages::follow_store`]): one small read of the stored version.
pub const FOLLOW_PERIOD: Duration = Duration::from_secs(2);

/// The file the latest image is kept in, inside `data_dir`.
pub const IMAGE_FILE: &str = "latest-image.jpg";

/// The description of [`IMAGE_FILE`], inside `data_dir`.
pub const INFO_FILE: &str = "latest-image.json";

/// What is known about the latest image (`GET /api/latest-image`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestImageInfo {
    /// Counts up by one with each new image: the store's count when the image is shared
    /// (the same on every Manager), else from 1 at each start.
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
    queue: Mutex<PathQueue>,
    wake: Notify,
    current: RwLock<Option<Arc<LatestImage>>>,
    announce: broadcast::Sender<u64>,
    closed: CancellationToken,
    worker_started: AtomicBool,
    recent: Mutex<RecentFiles>,
    skips: Mutex<SkipLog>,
    counters: Counters,
    /// Conversion threads alive, abandoned ones included.
    threads: AtomicUsize,
    thread_ended: Notify,
    /// Held while writing `latest-image.jpg`, so an abandoned conversion that finishes
    /// late never writes at the same time as the current one.
    persist: Mutex<()>,
    /// The modification time of the current image's file: a file written before it does
    /// not replace it.
    newest_source: Mutex<Option<SystemTime>>,
    /// Where images are shared with the other Managers (see [`LatestImages::share_through`]).
    store: std::sync::OnceLock<Arc<dyn Store>>,
    /// The stored version this Manager shows (stored by it or adopted), so that
    /// [`LatestImages::follow_store`] fetches the bytes only when another Manager stored one.
    store_seen: Mutex<Option<u64>>,
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    dropped: AtomicU64,
    conversions: AtomicU64,
    published: AtomicU64,
    already_converted: AtomicU64,
    older: AtomicU64,
    not_regular: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
}

/// What the pipeline did since it was made (`LatestImages::stats`), for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PipelineStats {
    /// Paths that entered the queue.
    pub submitted: u64,
    /// Paths dropped from a full queue (the oldest go first).
    pub dropped: u64,
    /// Files decoded (the costly part): one per distinct file, whatever its paths.
    pub conversions: u64,
    /// New images published.
    pub published: u64,
    /// Paths skipped because the same file (name, size, modification time) was converted
    /// already, e.g. reported by the worker and seen by the watcher, or renamed.
    pub already_converted: u64,
    /// Paths skipped because the file was written before the current image's file (e.g.
    /// the previous render of a shot, moved aside by `move-to-final`).
    pub older: u64,
    /// Paths skipped because they are not regular files (FIFO, socket, device, folder).
    pub not_regular: u64,
    /// Paths skipped for another reason: missing, unreadable, not an image, over a limit.
    pub failed: u64,
    /// Conversions abandoned after [`ConvertLimits::max_duration`].
    pub timed_out: u64,
}

impl PipelineStats {
    /// Add these counts to a `/metrics` scrape (docs/metrics.md, "The latest image").
    pub fn register(&self, reg: &mut prometheus_client::registry::Registry) {
        use prometheus_client::metrics::counter::{ConstCounter, Counter};
        use prometheus_client::metrics::family::Family;
        for (name, help, value) in [
            (
                "flamenco_latest_image_paths_queued",
                "Paths queued for the latest image (worker reports and the watched folder)",
                self.submitted,
            ),
            (
                "flamenco_latest_image_paths_dropped",
                "Waiting paths dropped because the queue was full (the oldest go first)",
                self.dropped,
            ),
            (
                "flamenco_latest_image_conversions",
                "Files decoded for the latest image (each distinct file once)",
                self.conversions,
            ),
            (
                "flamenco_latest_image_published",
                "New latest images published",
                self.published,
            ),
            (
                "flamenco_latest_image_timeouts",
                "Conversions abandoned after their time limit (a hung file system?)",
                self.timed_out,
            ),
        ] {
            reg.register(name, help, ConstCounter::new(value));
        }
        let skipped = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        for (reason, value) in [
            ("already_converted", self.already_converted),
            ("older", self.older),
            ("not_regular", self.not_regular),
            ("failed", self.failed),
        ] {
            skipped
                .get_or_create(&vec![("reason", reason)])
                .inc_by(value);
        }
        reg.register(
            "flamenco_latest_image_paths_skipped",
            "Paths not converted: already_converted (the same file under any name), older \
             (written before the current image's file), \
             not_regular (FIFO, socket, device, folder), failed (missing, unreadable, not an \
             image, over a limit)",
            skipped,
        );
    }
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
                queue: Mutex::new(PathQueue::default()),
                wake: Notify::new(),
                current: RwLock::new(None),
                announce,
                closed: CancellationToken::new(),
                worker_started: AtomicBool::new(false),
                recent: Mutex::new(RecentFiles::default()),
                skips: Mutex::new(SkipLog::default()),
                counters: Counters::default(),
                threads: AtomicUsize::new(0),
                thread_ended: Notify::new(),
                persist: Mutex::new(()),
                newest_source: Mutex::new(None),
                store: std::sync::OnceLock::new(),
                store_seen: Mutex::new(None),
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
        let source_modified = saved.as_ref().and_then(|s| s.source_modified);
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
        *self
            .shared
            .newest_source
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = source_modified.map(SystemTime::from);
        true
    }

    /// Share images with the other Managers of `store` (once; later calls are ignored):
    /// new images are stored there, and [`LatestImages::follow_store`] adopts theirs.
    pub fn share_through(&self, store: Arc<dyn Store>) {
        let _ = self.shared.store.set(store);
    }

    /// Adopt the stored image when another Manager stored a new one since this one last
    /// looked (one read of the version; the bytes only when it changed). Announced to
    /// `/imagewatch` listeners like a local image, and saved in `data_dir`. Returns whether
    /// an image was adopted; without a store, does nothing.
    pub async fn follow_store(&self) -> crate::store::StoreResult<bool> {
        let Some(store) = self.shared.store.get().cloned() else {
            return Ok(false);
        };
        if self.is_closed() {
            return Ok(false);
        }
        let seen = *self
            .shared
            .store_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(version) = store.latest_image_version().await? else {
            return Ok(false);
        };
        if seen == Some(version) {
            return Ok(false);
        }
        let Some(stored) = store.latest_image().await? else {
            return Ok(false);
        };
        Ok(adopt(&self.shared, stored))
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

    /// Queue a rendered file for conversion. Never waits: when the queue is full
    /// ([`QUEUE_CAPACITY`] paths or [`QUEUE_MAX_BYTES`] bytes), the oldest waiting paths are
    /// dropped (logged in summary). A path already waiting is not queued twice. After
    /// [`LatestImages::close`] this does nothing.
    ///
    /// Must be called inside a Tokio runtime (the conversion task is started on the first
    /// call); outside one the path is logged and skipped.
    pub fn submit(&self, path: impl Into<PathBuf>) {
        self.submit_all(std::iter::once(path.into()));
    }

    /// [`LatestImages::submit`] for several paths, in order (the last one is converted
    /// last). Returns how many were queued.
    pub fn submit_all(&self, paths: impl IntoIterator<Item = PathBuf>) -> usize {
        if self.shared.closed.is_cancelled() {
            tracing::debug!("latest image: shutting down, paths ignored");
            return 0;
        }
        if !self.ensure_worker() {
            tracing::warn!("latest image: no async runtime to convert images in; paths skipped");
            return 0;
        }
        let mut queued = 0;
        let mut dropped_total = 0;
        let mut too_long = None;
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            for path in paths {
                match queue.push(path.clone()) {
                    Pushed::Queued { dropped } => {
                        queued += 1;
                        dropped_total += dropped;
                    }
                    Pushed::Duplicate => {}
                    Pushed::TooLong => too_long = Some(path),
                }
            }
        }
        let counters = &self.shared.counters;
        counters
            .submitted
            .fetch_add(queued as u64, Ordering::Relaxed);
        counters
            .dropped
            .fetch_add(dropped_total as u64, Ordering::Relaxed);
        if dropped_total > 0 || too_long.is_some() {
            let mut skips = self.shared.skips.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            if dropped_total > 0 {
                skips.skip_many(
                    now,
                    "dropped from the full queue",
                    dropped_total as u64,
                    &format!(
                        "latest image: {dropped_total} waiting paths dropped: more than \
                         {QUEUE_CAPACITY} paths (or {QUEUE_MAX_BYTES} bytes) were waiting for \
                         conversion; the newest are kept"
                    ),
                );
            }
            if let Some(path) = too_long {
                skips.skip(
                    now,
                    "too long",
                    &path,
                    &format!("the path is longer than {QUEUE_MAX_BYTES} bytes"),
                );
            }
        }
        if queued > 0 {
            self.shared.wake.notify_one();
        }
        queued
    }

    /// How many paths wait for conversion (not counting the one being converted).
    pub fn pending(&self) -> usize {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether nothing waits and no conversion is in progress (an abandoned one does not
    /// count).
    pub fn is_idle(&self) -> bool {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_idle()
    }

    /// What the pipeline did so far.
    pub fn stats(&self) -> PipelineStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PipelineStats {
            submitted: get(&c.submitted),
            dropped: get(&c.dropped),
            conversions: get(&c.conversions),
            published: get(&c.published),
            already_converted: get(&c.already_converted),
            older: get(&c.older),
            not_regular: get(&c.not_regular),
            failed: get(&c.failed),
            timed_out: get(&c.timed_out),
        }
    }

    /// Conversion threads alive now, abandoned ones included (at most
    /// [`MAX_CONVERSION_THREADS`]).
    pub fn conversion_threads(&self) -> usize {
        self.shared.threads.load(Ordering::Acquire)
    }

    /// Listen for new images. The subscription ends when the pipeline is closed; dropping
    /// it is all a listener needs to do to go away.
    pub fn subscribe(&self) -> ImageEvents {
        ImageEvents {
            rx: self.shared.announce.subscribe(),
            closed: self.shared.closed.clone(),
        }
    }

    /// Stop converting, drop the waiting paths and end every subscription. Returns at
    /// once: a conversion in progress is abandoned on its thread (it is neither saved nor
    /// published), so a conversion stuck on a hung file system cannot hold up a shutdown.
    /// Idempotent.
    pub fn close(&self) {
        self.shared.closed.cancel();
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.shared
            .skips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush();
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

/// What one conversion thread found.
enum Outcome {
    Converted {
        converted: Converted,
        saved: Saved,
        persisted: std::io::Result<()>,
    },
    AlreadyConverted,
    /// Written before the current image's file.
    Older,
    Skipped {
        reason: &'static str,
        error: ConvertError,
    },
    /// Closed or abandoned meanwhile: nothing to publish.
    Closed,
}

/// The conversion task: one path at a time, each on a thread of its own with a time limit.
async fn run_conversions(shared: Arc<Shared>) {
    loop {
        let path = tokio::select! {
            biased;
            _ = shared.closed.cancelled() => break,
            path = next_path(&shared) => path,
        };
        let outcome = tokio::select! {
            biased;
            _ = shared.closed.cancelled() => None,
            outcome = convert_in_thread(&shared, &path) => outcome,
        };
        let Some(outcome) = outcome else {
            break;
        };
        let counters = &shared.counters;
        match outcome {
            Outcome::Converted {
                converted,
                saved,
                persisted,
            } => {
                if let Err(e) = persisted {
                    tracing::warn!(
                        "latest image: cannot save it in {}: {e}; it is served from memory \
                         but will not survive a restart",
                        shared.data_dir.display()
                    );
                }
                let version = match share(&shared, &saved, &converted).await {
                    Sharing::Stored(version) => Some(version),
                    Sharing::Local => None,
                    Sharing::Kept => {
                        counters.older.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            "latest image: {} is older than the image another Manager \
                             stored; not shown",
                            skips::shown(&path)
                        );
                        shared
                            .queue
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .done();
                        continue;
                    }
                };
                counters.published.fetch_add(1, Ordering::Relaxed);
                if let Some(modified) = saved.source_modified.map(SystemTime::from) {
                    // A time far in the future (a skewed clock) would hide every later file.
                    if modified <= SystemTime::now() + FUTURE_TOLERANCE {
                        *shared
                            .newest_source
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = Some(modified);
                    }
                }
                publish(&shared, saved, converted, version);
            }
            Outcome::Older => {
                counters.older.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "latest image: {} was written before the current image's file; not shown",
                    skips::shown(&path)
                );
            }
            Outcome::AlreadyConverted => {
                counters.already_converted.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "latest image: {} was converted already (under this or another name)",
                    skips::shown(&path)
                );
            }
            Outcome::Skipped { reason, error } => {
                let counter = if matches!(error, ConvertError::NotAFile) {
                    &counters.not_regular
                } else {
                    &counters.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                shared.skips.lock().unwrap_or_else(|e| e.into_inner()).skip(
                    std::time::Instant::now(),
                    reason,
                    &path,
                    &error.to_string(),
                );
            }
            Outcome::Closed => {}
        }
        shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .done();
    }
    shared
        .skips
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .flush();
    tracing::debug!("latest image: conversion task stopped");
}

/// The next waiting path; meanwhile, a skip summary whose window ended is logged.
async fn next_path(shared: &Shared) -> PathBuf {
    loop {
        if let Some(path) = shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return path;
        }
        let due = shared.skips.lock().unwrap_or_else(|e| e.into_inner()).due();
        match due {
            None => shared.wake.notified().await,
            Some(due) => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => {
                        shared
                            .skips
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .flush_if_due(std::time::Instant::now());
                    }
                }
            }
        }
    }
}

/// Lowers the live-thread count when a conversion thread ends, panics included.
struct ThreadSlot(Arc<Shared>);

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        self.0.threads.fetch_sub(1, Ordering::AcqRel);
        self.0.thread_ended.notify_one();
    }
}

/// Convert `path` on a new thread, waiting at most `max_duration` for it; `None` once the
/// pipeline is closed.
async fn convert_in_thread(shared: &Arc<Shared>, path: &Path) -> Option<Outcome> {
    // Wait for a free thread slot (only when earlier conversions are stuck).
    let mut warned = false;
    while shared.threads.load(Ordering::Acquire) >= MAX_CONVERSION_THREADS {
        if !warned {
            warned = true;
            tracing::warn!(
                "latest image: {MAX_CONVERSION_THREADS} conversions are stuck (a hung file \
                 system?); new images wait until one of them ends"
            );
        }
        tokio::select! {
            _ = shared.closed.cancelled() => return None,
            _ = shared.thread_ended.notified() => {}
        }
    }
    let abandoned = Arc::new(AtomicBool::new(false));
    let (tx, rx) = oneshot::channel();
    shared.threads.fetch_add(1, Ordering::AcqRel);
    let slot = ThreadSlot(shared.clone());
    let spawned = std::thread::Builder::new()
        .name("latest-image".into())
        .spawn({
            let path = path.to_path_buf();
            let abandoned = abandoned.clone();
            move || {
                let shared = slot.0.clone();
                let outcome = convert_one(&shared, &path, &abandoned);
                let _ = tx.send(outcome);
                drop(slot);
            }
        });
    if let Err(e) = spawned {
        // The closure (and with it the slot) was dropped: the count is right again.
        return Some(Outcome::Skipped {
            reason: "no thread",
            error: ConvertError::Io(std::io::Error::other(format!(
                "cannot start a conversion thread: {e}"
            ))),
        });
    }
    let limit = shared.limits.max_duration;
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(outcome)) => Some(outcome),
        Ok(Err(_)) => Some(Outcome::Skipped {
            reason: "failed",
            error: ConvertError::Decode("the conversion thread ended without an answer".into()),
        }),
        Err(_) => {
            abandoned.store(true, Ordering::Release);
            shared.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "latest image: converting {} took more than {} s; abandoned it (is the file \
                 on a hung network mount?) and going on with the next image",
                skips::shown(path),
                limit.as_secs_f64()
            );
            Some(Outcome::Closed)
        }
    }
}

/// The short reason a skip is counted under in the log summary.
fn reason_of(error: &ConvertError) -> &'static str {
    match error {
        ConvertError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => "not found",
        ConvertError::Io(_) => "unreadable",
        ConvertError::NotAFile => "not a regular file",
        ConvertError::TooLarge { .. } | ConvertError::OverLimits(_) => "over the limits",
        ConvertError::Unsupported(_) => "not a supported image",
        ConvertError::Decode(_) | ConvertError::Encode(_) => "not decodable",
        ConvertError::Closed => "shutting down",
    }
}

/// One conversion, on its own thread: regular files only, each distinct file once.
fn convert_one(shared: &Shared, path: &Path, abandoned: &AtomicBool) -> Outcome {
    #[cfg(test)]
    tests::hang_if_asked(path);
    let skipped = |error: ConvertError| Outcome::Skipped {
        reason: reason_of(&error),
        error,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return skipped(ConvertError::Io(e)),
    };
    if !meta.is_file() {
        return skipped(ConvertError::NotAFile);
    }
    let identity = FileIdentity::new(path, &meta);
    let forget = |shared: &Shared| {
        shared
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&identity)
    };
    if !shared
        .recent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(identity.clone())
    {
        return Outcome::AlreadyConverted;
    }
    let modified = meta.modified().ok();
    let newest = *shared
        .newest_source
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let (Some(modified), Some(newest)) = (modified, newest) {
        if modified < newest {
            return Outcome::Older;
        }
    }
    shared.counters.conversions.fetch_add(1, Ordering::Relaxed);
    let converted = match convert::convert_file(path, &shared.limits) {
        Ok(c) => c,
        Err(e) => {
            // Maybe half-written: a later report of the finished file may try again.
            forget(shared);
            return skipped(e);
        }
    };
    let saved = Saved {
        // Whole milliseconds: what the stores keep, so every Manager shows the same time.
        updated: chrono::SubsecRound::trunc_subsecs(Utc::now(), 3),
        source_path: path.display().to_string(),
        source_modified: modified.map(DateTime::<Utc>::from),
    };
    let persisted = {
        let _one_writer = shared.persist.lock().unwrap_or_else(|e| e.into_inner());
        if shared.closed.is_cancelled() || abandoned.load(Ordering::Acquire) {
            forget(shared);
            return Outcome::Closed;
        }
        persist(&shared.data_dir, &converted.jpeg, &saved)
    };
    Outcome::Converted {
        converted,
        saved,
        persisted,
    }
}

/// What storing a new image in the shared store gave.
enum Sharing {
    /// Stored as this version.
    Stored(u64),
    /// Not stored: the store has an image made from a newer file.
    Kept,
    /// No store, or it failed: shown by this Manager only.
    Local,
}

/// Store a new image for the other Managers (see [`LatestImages::share_through`]).
async fn share(shared: &Arc<Shared>, saved: &Saved, converted: &Converted) -> Sharing {
    let Some(store) = shared.store.get() else {
        return Sharing::Local;
    };
    let image = NewSharedImage {
        updated: saved.updated,
        source_path: saved.source_path.clone(),
        source_modified: saved.source_modified,
        width: converted.width,
        height: converted.height,
        jpeg: converted.jpeg.clone(),
    };
    match store.put_latest_image(&image).await {
        Ok(ImagePut::Stored { version }) => {
            *shared.store_seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(version);
            Sharing::Stored(version)
        }
        Ok(ImagePut::Kept { .. }) => Sharing::Kept,
        Err(e) => {
            tracing::warn!(
                "latest image: cannot store it for the other Managers: {e}; this Manager \
                 shows it, the others keep theirs until the next image is stored"
            );
            Sharing::Local
        }
    }
}

/// Show an image another Manager stored: the same version and bytes (so the same ETag),
/// saved in `data_dir` for the next start, announced to `/imagewatch` listeners.
fn adopt(shared: &Shared, stored: SharedImage) -> bool {
    if shared.closed.is_cancelled() {
        return false;
    }
    let SharedImage { version, image } = stored;
    let saved = Saved {
        updated: image.updated,
        source_path: image.source_path,
        source_modified: image.source_modified,
    };
    {
        let _one_writer = shared.persist.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = persist(&shared.data_dir, &image.jpeg, &saved) {
            tracing::warn!(
                "latest image: cannot save the image another Manager stored in {}: {e}; it \
                 is served from memory",
                shared.data_dir.display()
            );
        }
    }
    if let Some(modified) = saved.source_modified.map(SystemTime::from) {
        if modified <= SystemTime::now() + FUTURE_TOLERANCE {
            *shared
                .newest_source
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(modified);
        }
    }
    *shared.store_seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(version);
    let converted = Converted {
        width: image.width,
        height: image.height,
        jpeg: image.jpeg,
    };
    publish(shared, saved, converted, Some(version));
    true
}

/// Make `converted` the current image, as `version` (the store's) or else the next local
/// version, and announce it.
fn publish(shared: &Shared, saved: Saved, converted: Converted, version: Option<u64>) {
    let version = {
        let mut current = shared.current.write().unwrap_or_else(|e| e.into_inner());
        let version = version.unwrap_or_else(|| current.as_ref().map_or(1, |c| c.info.version + 1));
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
    /// The source file's modification time (absent in files of older versions).
    #[serde(default)]
    source_modified: Option<DateTime<Utc>>,
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
