//! Upstream mode: the Flamenco Server client and the sync loops (manager-v2.md §5).
//!
//! The Manager is in upstream mode when `flamenco:` is configured. Then:
//! * [`startup`] tells the Server our URL, variables and workers, retrying until it
//!   answers 2xx;
//! * [`download`] fetches tasks (clean slate, then incremental), every
//!   `download_task_sleep`, on `/kick` and when a worker finds the queue empty;
//! * [`refetch`] re-validates a task with the Server before it is handed to a worker,
//!   without holding anything locked across the call;
//! * [`push`] sends the outbox in batches and applies the Server's cancel list.
//!
//! Each call has a connect and a total timeout ([`client`]); failed loops back off
//! exponentially with jitter ([`backoff`]); what happened is visible as an
//! [`UpstreamStatus`] ([`status`]). [`run`] drives the loops until a shutdown token is
//! cancelled; an in-progress push or download completes first.

pub mod backoff;
pub mod client;
pub mod download;
pub mod push;
pub mod refetch;
pub mod startup;
pub mod status;
pub mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, UpstreamGzip};
use crate::Manager;

pub use client::{check_config, CallError, ConfigProblem, ServerClient, Timeouts};
pub use push::{PushOutcome, PushSummary};
pub use status::{GzipState, UpstreamStatus};

/// The settings key of the download watermark (`X-Flamenco-Last-Updated` of the last
/// stored download), as v2 named it.
pub const WATERMARK_KEY: &str = "depsgraph_last_modified";

/// Tunables of upstream mode that are not in the configuration file (the SDK can set
/// them; the defaults follow from the configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamOptions {
    pub timeouts: Timeouts,
    /// First retry delay after a failed call.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// An update carried by this many answered pushes without being acknowledged is set
    /// aside.
    pub set_aside_after: u32,
    /// How often the pusher checks whether a push is due.
    pub push_check_interval: Duration,
    /// After a re-fetch got no answer, skip re-fetches (treating tasks as unchanged) for
    /// this long, so that a Server outage does not slow down every `/task`.
    pub refetch_pause_after_failure: Duration,
    /// The startup notification's first attempt waits this long.
    pub startup_delay: Duration,
}

impl UpstreamOptions {
    /// Defaults scaled to the configured intervals: the push check runs four times per
    /// shortest push interval (between 10 ms and 1 s); retries start at that interval (at
    /// most 1 s) and grow to five cancel-poll intervals (between 1 s and 60 s).
    pub fn from_config(config: &Config) -> UpstreamOptions {
        let shortest = config
            .task_update_push_max_interval
            .min(config.cancel_task_fetch_max_interval);
        let check = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let initial = shortest.clamp(Duration::from_millis(50), Duration::from_secs(1));
        let cap = (config.cancel_task_fetch_max_interval * 5)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        UpstreamOptions {
            timeouts: Timeouts::default(),
            backoff_initial: initial,
            backoff_cap: cap,
            set_aside_after: 5,
            push_check_interval: check,
            refetch_pause_after_failure: Duration::from_secs(10),
            startup_delay: Duration::from_millis(500).min(shortest),
        }
    }
}

/// The upstream connection of a [`Manager`]: the client, the shared state of the loops,
/// and what the worker API uses (kicks, re-fetches).
pub struct Upstream {
    client: ServerClient,
    options: UpstreamOptions,
    status: status::StatusTracker,
    gzip: UpstreamGzip,
    /// `auto` mode: false once the Server refused a compressed body.
    gzip_works: AtomicBool,
    download_kick: Notify,
    push_kick: Notify,
    last_empty_queue_kick: Mutex<Option<Instant>>,
    refetch_paused_until: Mutex<Option<Instant>>,
    /// One push at a time in this process (the loop, `flamenco push`, the SDK).
    push_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("server", &self.client.base().as_str())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The upstream connection for this configuration, or why it cannot be made.
    pub fn new(config: &Config, options: UpstreamOptions) -> Result<Upstream, ConfigProblem> {
        let client = ServerClient::new(config, options.timeouts)?;
        let gzip_state = match config.upstream_gzip {
            UpstreamGzip::Auto => GzipState::Auto,
            UpstreamGzip::On => GzipState::On,
            UpstreamGzip::Off => GzipState::Off,
        };
        let status = status::StatusTracker::new(
            client.base().to_string(),
            client.manager_id().to_string(),
            gzip_state,
        );
        Ok(Upstream {
            client,
            options,
            status,
            gzip: config.upstream_gzip,
            gzip_works: AtomicBool::new(true),
            download_kick: Notify::new(),
            push_kick: Notify::new(),
            last_empty_queue_kick: Mutex::new(None),
            refetch_paused_until: Mutex::new(None),
            push_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn client(&self) -> &ServerClient {
        &self.client
    }

    pub fn options(&self) -> &UpstreamOptions {
        &self.options
    }

    pub(crate) fn tracker(&self) -> &status::StatusTracker {
        &self.status
    }

    /// The state as last recorded (`backlog`/`set_aside` as of the last push; use
    /// `Manager::upstream_status` for fresh counts).
    pub fn status(&self) -> UpstreamStatus {
        self.status.snapshot()
    }

    /// Ask the download loop for a download now (`/kick`). Never waits: a kick during a
    /// download makes one more download follow it.
    pub fn kick_download(&self) {
        self.download_kick.notify_one();
    }

    /// Ask the push loop for a push now.
    pub fn kick_push(&self) {
        self.push_kick.notify_one();
    }

    /// A worker found the queue empty: kick a download unless one was kicked this way
    /// less than `download_task_recheck_throttle` ago (`None` in the configuration means
    /// never). Returns whether it kicked.
    pub fn kick_for_empty_queue(&self, throttle: Option<Duration>) -> bool {
        let Some(throttle) = throttle else {
            return false;
        };
        let mut last = self
            .last_empty_queue_kick
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= throttle);
        if due {
            *last = Some(Instant::now());
            drop(last);
            self.kick_download();
        }
        due
    }

    /// Compress the next push?
    fn use_gzip(&self) -> bool {
        match self.gzip {
            UpstreamGzip::On => true,
            UpstreamGzip::Off => false,
            UpstreamGzip::Auto => self.gzip_works.load(Ordering::Relaxed),
        }
    }

    /// `auto` mode: the Server does not take compressed bodies; say so once.
    fn gzip_refused(&self, why: &str) {
        if self.gzip == UpstreamGzip::Auto && self.gzip_works.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "the Flamenco Server does not accept gzip-compressed pushes ({why}); sending plain JSON from now on (set `upstream_gzip: false` to skip the attempt)"
            );
            self.status.gzip(GzipState::FellBack);
        }
    }
}

/// Run the upstream loops (startup notification, downloads, pushes) until `shutdown` is
/// cancelled. Returns at once in standalone mode. In-progress calls complete first.
pub async fn run(manager: Arc<Manager>, shutdown: CancellationToken) {
    if manager.upstream().is_none() {
        return;
    }
    tracing::info!(
        server = %manager.upstream().map(|u| u.client.base().to_string()).unwrap_or_default(),
        "upstream mode: syncing with the Flamenco Server"
    );
    tokio::join!(
        startup::run(manager.clone(), shutdown.clone()),
        download::run(manager.clone(), shutdown.clone()),
        push::run(manager.clone(), shutdown.clone()),
    );
    tracing::info!("upstream loops stopped");
}

/// [`run`] on a new task.
pub fn spawn(manager: Arc<Manager>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(manager, shutdown))
}

/// Sleep `d`, or less when `shutdown` is cancelled; true when cancelled.
async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
