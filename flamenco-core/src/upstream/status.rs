//! What the SDK, the CLI and the logs can see of the upstream connection: the last
//! success, the last error, consecutive failures, backlog and set-aside counts, gzip
//! state, and running totals. The loops record into a [`StatusTracker`]; readers get an
//! [`UpstreamStatus`] snapshot (see `Manager::upstream_status`).

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Which upstream call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Call {
    Startup,
    Download,
    Push,
    Refetch,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Call::Startup => "startup notification",
            Call::Download => "task download",
            Call::Push => "update push",
            Call::Refetch => "task re-fetch",
        })
    }
}

/// The last failed upstream call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LastError {
    pub at: DateTime<Utc>,
    pub call: Call,
    pub message: String,
}

/// Whether pushes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GzipState {
    /// `upstream_gzip: true`.
    On,
    /// `upstream_gzip: false`.
    Off,
    /// `auto`, and the Server has not refused a compressed body (yet).
    Auto,
    /// `auto`, and the Server refused a compressed body: plain JSON from now on.
    FellBack,
}

/// Running totals since the process started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub pushes: u64,
    pub updates_sent: u64,
    pub updates_acknowledged: u64,
    pub updates_set_aside: u64,
    pub cancel_requests: u64,
    pub downloads: u64,
    pub tasks_downloaded: u64,
    pub refetches: u64,
    pub refetch_changes: u64,
}

/// A snapshot of the upstream connection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UpstreamStatus {
    /// The Server's base URL.
    pub server: String,
    pub manager_id: String,
    /// The last upstream call that succeeded.
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<LastError>,
    /// Failed pushes since the last successful one.
    pub consecutive_push_failures: u32,
    /// Failed downloads since the last successful one.
    pub consecutive_download_failures: u32,
    /// When the update pusher tries again after a failure.
    pub next_push_retry: Option<DateTime<Utc>>,
    /// When the Server accepted the startup notification.
    pub startup_notified: Option<DateTime<Utc>>,
    pub last_download: Option<DateTime<Utc>>,
    pub last_push: Option<DateTime<Utc>>,
    /// Updates waiting in the outbox.
    pub backlog: u64,
    /// Updates the Server never acknowledged, set aside.
    pub set_aside: u64,
    pub gzip: GzipState,
    pub totals: Totals,
}

/// Where the loops record what happened.
#[derive(Debug)]
pub struct StatusTracker {
    inner: Mutex<UpstreamStatus>,
}

impl StatusTracker {
    pub fn new(server: String, manager_id: String, gzip: GzipState) -> StatusTracker {
        StatusTracker {
            inner: Mutex::new(UpstreamStatus {
                server,
                manager_id,
                last_success: None,
                last_error: None,
                consecutive_push_failures: 0,
                consecutive_download_failures: 0,
                next_push_retry: None,
                startup_notified: None,
                last_download: None,
                last_push: None,
                backlog: 0,
                set_aside: 0,
                gzip,
                totals: Totals::default(),
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut UpstreamStatus) -> R) -> R {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner)
    }

    /// A copy of the current state (`backlog` and `set_aside` as last recorded).
    pub fn snapshot(&self) -> UpstreamStatus {
        self.with(|s| s.clone())
    }

    pub fn success(&self, call: Call, now: DateTime<Utc>) {
        self.with(|s| {
            s.last_success = Some(now);
            match call {
                Call::Startup => s.startup_notified = Some(now),
                Call::Download => {
                    s.last_download = Some(now);
                    s.consecutive_download_failures = 0;
                }
                Call::Push => {
                    s.last_push = Some(now);
                    s.next_push_retry = None;
                    s.consecutive_push_failures = 0;
                }
                Call::Refetch => {}
            }
        });
    }

    pub fn failure(&self, call: Call, message: String, now: DateTime<Utc>) {
        self.with(|s| {
            match call {
                Call::Push => s.consecutive_push_failures += 1,
                Call::Download => s.consecutive_download_failures += 1,
                Call::Startup | Call::Refetch => {}
            }
            s.last_error = Some(LastError {
                at: now,
                call,
                message,
            });
        });
    }

    pub fn push_retry_at(&self, at: Option<DateTime<Utc>>) {
        self.with(|s| s.next_push_retry = at);
    }

    pub fn gzip(&self, state: GzipState) {
        self.with(|s| s.gzip = state);
    }

    pub fn counts(&self, backlog: u64, set_aside: u64) {
        self.with(|s| {
            s.backlog = backlog;
            s.set_aside = set_aside;
        });
    }

    pub fn totals(&self, f: impl FnOnce(&mut Totals)) {
        self.with(|s| f(&mut s.totals));
    }
}
