//! The `watch_for_latest_image` folder watcher (manager-v2.md §9.3): the folder tree is
//! watched recursively, new subfolders included; image files (`.png`, `.jpg`, `.jpeg`,
//! `.tif`, `.tiff`, `.exr`, any case) that are created, written or renamed into it are
//! reported to the pipeline once they have had no writes for [`WatchOptions::quiet`]
//! (2 s; checked every [`WatchOptions::tick`], 1 s), in the order they were last written,
//! so the most recently written file becomes the latest image.
//!
//! A folder created or renamed inside the tree is scanned once when it appears, so files
//! written into it before its watch was in place are not missed. The files found by one
//! scan have no write order of their own: they are reported by modification time, then by
//! frame number (the last group of digits of the file name), then by name, so the last
//! frame of a shot comes last. (Frames that were shown already, e.g. a folder renamed by
//! `move-to-final`, are not converted again: the pipeline recognises them, see
//! [`super::recent`].) Files renamed away or removed stop being tracked. Existing files are
//! not reported at start (as in v2).
//!
//! The watcher runs on a thread of its own, not on the async runtime: listing a folder on
//! a hung network mount blocks that thread only. Stopping it waits at most [`STOP_GRACE`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use super::{LatestImages, QUEUE_CAPACITY};

/// How long stopping the watcher waits for its thread (stuck on a hung file system, it is
/// left behind and the shutdown goes on).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// File name extensions of images the watcher reports (compared case-insensitively).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff", "exr"];

/// At most this many files are tracked at once; more are logged and ignored until the
/// tracked ones are reported.
const MAX_TRACKED: usize = 10_000;

/// At most this many directory entries are looked at when scanning a new folder.
const MAX_SCANNED: usize = 10_000;

/// Timing of the debounce.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// A file is reported after this long without writes (default 2 s).
    pub quiet: Duration,
    /// How often tracked files are checked (default 1 s).
    pub tick: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            quiet: Duration::from_secs(2),
            tick: Duration::from_secs(1),
        }
    }
}

/// The folder cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("watch_for_latest_image: {dir} does not exist; create it or change the setting")]
    Missing { dir: String },
    #[error("watch_for_latest_image: {dir} is not a folder; name a folder or clear the setting")]
    NotAFolder { dir: String },
    #[error("watch_for_latest_image: cannot read {dir}: {source}; check its permissions")]
    Unreadable { dir: String, source: std::io::Error },
    #[error("watch_for_latest_image: cannot watch {dir}: {source} (on Linux, raising fs.inotify.max_user_watches may help)")]
    Watch { dir: String, source: notify::Error },
}

/// Whether the watcher would report this file: its extension is one of
/// [`IMAGE_EXTENSIONS`], in any case.
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Check that `dir` exists, is a folder and can be listed (what [`spawn`] needs).
pub fn check_dir(dir: &Path) -> Result<(), WatchError> {
    let shown = dir.display().to_string();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(WatchError::Missing { dir: shown })
        }
        Err(source) => return Err(WatchError::Unreadable { dir: shown, source }),
        Ok(m) if !m.is_dir() => return Err(WatchError::NotAFolder { dir: shown }),
        Ok(_) => {}
    }
    std::fs::read_dir(dir)
        .map(|_| ())
        .map_err(|source| WatchError::Unreadable { dir: shown, source })
}

/// The frame number in a file name: the last group of digits of its stem
/// (`shot_010_frame_0042.png` → 42).
pub fn frame_number(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    let end = stem.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = stem[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    stem[start..end].parse().ok()
}

enum Msg {
    Event(notify::Result<Event>),
    Stop,
}

/// Watch `dir` recursively and submit finished image files to `images`, until `stop` is
/// cancelled (or `images` is closed). Must be called inside a Tokio runtime. The returned
/// task ends when the watcher's thread has ended, or [`STOP_GRACE`] after `stop` if the
/// thread is stuck.
pub fn spawn(
    dir: &Path,
    images: Arc<LatestImages>,
    options: WatchOptions,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, WatchError> {
    check_dir(dir)?;
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = mpsc::sync_channel::<Msg>(1024);
    let events = tx.clone();
    // notify calls this on its own thread, so it may block while the channel is full.
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        let _ = events.send(Msg::Event(event));
    })
    .map_err(|source| WatchError::Watch {
        dir: dir.display().to_string(),
        source,
    })?;
    watcher
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|source| WatchError::Watch {
            dir: dir.display().to_string(),
            source,
        })?;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let thread_stop = stop.clone();
    std::thread::Builder::new()
        .name("latest-image-watch".into())
        .spawn(move || {
            // submit() starts the conversion task on this runtime.
            let _runtime = runtime.enter();
            debounce(watcher, rx, &images, options, &thread_stop);
            let _ = done_tx.send(());
        })
        .map_err(|e| WatchError::Watch {
            dir: dir.display().to_string(),
            source: notify::Error::io(e),
        })?;
    tracing::info!(
        "watching {} (and its subfolders) for rendered images",
        dir.display()
    );
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = &mut done_rx => return,
            _ = stop.cancelled() => {}
        }
        // Wake the thread if it waits for events; it checks `stop` at least every tick.
        let _ = tx.try_send(Msg::Stop);
        if tokio::time::timeout(STOP_GRACE, done_rx).await.is_err() {
            tracing::warn!(
                "latest image: the folder watcher did not stop within {} s (a hung file \
                 system?); leaving it behind",
                STOP_GRACE.as_secs()
            );
        }
    }))
}

/// The watcher's thread: track writes, report quiet files every tick.
fn debounce(
    watcher: notify::RecommendedWatcher,
    rx: mpsc::Receiver<Msg>,
    images: &LatestImages,
    options: WatchOptions,
    stop: &CancellationToken,
) {
    let mut tracked = Tracked::default();
    let mut next_tick = Instant::now() + options.tick;
    loop {
        if stop.is_cancelled() || images.is_closed() {
            break;
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + options.tick;
            let mut done = tracked.quiet_since(now, options.quiet);
            // Only the newest can wait in the pipeline's queue anyway.
            let older = done.len().saturating_sub(QUEUE_CAPACITY);
            if older > 0 {
                tracing::debug!(
                    "latest image: {} files finished at once; reporting the newest \
                     {QUEUE_CAPACITY}",
                    done.len()
                );
                done.drain(..older);
            }
            if !done.is_empty() {
                images.submit_all(done);
            }
            continue;
        }
        match rx.recv_timeout(next_tick - now) {
            Ok(Msg::Event(Ok(event))) => tracked.handle(&event, Instant::now()),
            Ok(Msg::Event(Err(e))) => tracing::warn!("latest image: watcher error: {e}"),
            Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    // The receiver goes first, so notify's thread never waits on a full channel.
    drop(rx);
    drop(watcher);
    tracing::debug!("latest image: watcher stopped");
}

/// Files seen being written, with the time of their last write.
#[derive(Default)]
struct Tracked {
    /// The time of each file's last write, and a sequence number that orders writes seen
    /// at the same instant (the files of one scan).
    last_write: HashMap<PathBuf, (Instant, u64)>,
    next_seq: u64,
    overflow_logged: bool,
}

impl Tracked {
    fn handle(&mut self, event: &Event, now: Instant) {
        if event.need_rescan() {
            tracing::warn!(
                "latest image: the watcher missed events (too many at once); \
                 some rendered images may not be shown"
            );
        }
        match &event.kind {
            EventKind::Create(kind) => {
                for path in &event.paths {
                    let is_dir = matches!(kind, CreateKind::Folder)
                        || (!matches!(kind, CreateKind::File) && path.is_dir());
                    if is_dir {
                        self.scan(path, now);
                    } else {
                        self.touch(path, now);
                    }
                }
            }
            EventKind::Modify(ModifyKind::Name(mode)) => match mode {
                RenameMode::From => self.forget_all(&event.paths),
                RenameMode::To => self.arrived(&event.paths, now),
                RenameMode::Both => {
                    if let [from, to, ..] = event.paths.as_slice() {
                        self.forget(from);
                        self.arrived(std::slice::from_ref(to), now);
                    }
                }
                _ => {
                    for path in &event.paths {
                        if path.exists() {
                            self.arrived(std::slice::from_ref(path), now);
                        } else {
                            self.forget(path);
                        }
                    }
                }
            },
            EventKind::Modify(ModifyKind::Metadata(_)) => {}
            EventKind::Modify(_) | EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for path in &event.paths {
                    self.touch(path, now);
                }
            }
            EventKind::Remove(_) => self.forget_all(&event.paths),
            _ => {}
        }
    }

    /// A file or folder renamed into the tree.
    fn arrived(&mut self, paths: &[PathBuf], now: Instant) {
        for path in paths {
            if path.is_dir() {
                self.scan(path, now);
            } else {
                self.touch(path, now);
            }
        }
    }

    fn touch(&mut self, path: &Path, now: Instant) {
        if !is_image_path(path) {
            return;
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        if let Some(t) = self.last_write.get_mut(path) {
            *t = (now, seq);
            return;
        }
        if self.last_write.len() >= MAX_TRACKED {
            if !self.overflow_logged {
                tracing::warn!(
                    "latest image: more than {MAX_TRACKED} files are being written at once; \
                     ignoring new ones until some are finished"
                );
                self.overflow_logged = true;
            }
            return;
        }
        self.last_write.insert(path.to_path_buf(), (now, seq));
    }

    fn forget(&mut self, path: &Path) {
        self.last_write.retain(|p, _| !p.starts_with(path));
    }

    fn forget_all(&mut self, paths: &[PathBuf]) {
        for path in paths {
            self.forget(path);
        }
    }

    /// Track the image files already in a new folder (and its subfolders), in the order
    /// of their modification times, frame numbers and names. Entries that cannot be read
    /// are skipped.
    fn scan(&mut self, dir: &Path, now: Instant) {
        let mut budget = MAX_SCANNED;
        let mut found: Vec<(Option<SystemTime>, Option<u64>, PathBuf)> = Vec::new();
        let mut stack = vec![(dir.to_path_buf(), 0usize)];
        'dirs: while let Some((dir, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if budget == 0 {
                    break 'dirs;
                }
                budget -= 1;
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let path = entry.path();
                if kind.is_dir() && depth < 16 {
                    stack.push((path, depth + 1));
                } else if kind.is_file() && is_image_path(&path) {
                    let modified = entry.metadata().and_then(|m| m.modified()).ok();
                    found.push((modified, frame_number(&path), path));
                }
            }
        }
        found.sort();
        for (_, _, path) in found {
            self.touch(&path, now);
        }
    }

    /// The files that have had no writes for `quiet`, oldest write first; they are no
    /// longer tracked.
    fn quiet_since(&mut self, now: Instant, quiet: Duration) -> Vec<PathBuf> {
        let mut done: Vec<(PathBuf, (Instant, u64))> = self
            .last_write
            .iter()
            .filter(|(_, (t, _))| now.saturating_duration_since(*t) >= quiet)
            .map(|(p, t)| (p.clone(), *t))
            .collect();
        done.sort_by_key(|(_, t)| *t);
        for (p, _) in &done {
            self.last_write.remove(p);
        }
        if self.last_write.len() < MAX_TRACKED {
            self.overflow_logged = false;
        }
        done.into_iter().map(|(p, _)| p).collect()
    }
}
