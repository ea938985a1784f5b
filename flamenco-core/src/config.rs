//! The Manager's settings: `flamenco-manager.yaml`, its defaults and its validation.
//!
//! Keys are v2's (manager-v2.md §1.2) plus `data_dir`, `database_synchronous`, `worker_registration_secret`,
//! `max_request_body`, `upstream_gzip`, `max_tasks_per_job`, `admin_token`, and the serving
//! limits (`tls_redirect_listen`, `max_connections`, `max_header_size`, `request_read_timeout`,
//! `worker_request_rate`, `worker_request_burst`, `allowed_hosts`; docs/security.md). Durations accept `30s`, `5m`, `1h30m`; a bare
//! integer means seconds. Unknown keys, wrong types and clashing variables are errors that
//! name the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file name looked for in the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "flamenco-manager.yaml";

/// variable name → platform → value.
pub type VariableMap = BTreeMap<String, BTreeMap<String, String>>;

/// Effective settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `mongodb://…` selects MongoDB; empty selects the embedded store in `data_dir`.
    pub database_url: String,
    /// Embedded store location (default `./flamenco-data`).
    pub data_dir: PathBuf,
    /// The embedded store's `PRAGMA synchronous`: `normal` (default) or `full` (every commit
    /// synced to disk: survives power loss, costs write throughput). Ignored by MongoDB.
    pub database_synchronous: crate::store::sqlite::Synchronous,
    /// Address to bind, e.g. `[::0]:8083`, `:8083`, `127.0.0.1:8083`. Default `:8083`.
    pub listen: String,
    pub own_url: String,
    /// Flamenco Server base URL; empty means standalone mode.
    pub flamenco: String,
    pub manager_id: String,
    pub manager_secret: String,
    pub tlskey: String,
    pub tlscert: String,
    pub download_task_sleep: Duration,
    /// Negative in v2 means "never"; `None` here.
    pub download_task_recheck_throttle: Option<Duration>,
    pub task_update_push_max_interval: Duration,
    pub task_update_push_max_count: u32,
    pub cancel_task_fetch_max_interval: Duration,
    pub active_task_timeout_interval: Duration,
    /// The first timeout check waits this long after start, so that workers can reach a
    /// restarted Manager first (v2 hard-coded 5 minutes).
    pub active_task_timeout_startup_delay: Duration,
    pub active_worker_timeout_interval: Duration,
    pub task_cleanup_max_age: Duration,
    pub watch_for_latest_image: String,
    /// Plain variables, trailing slashes kept.
    pub variables: VariableMap,
    /// Path-prefix variables, trailing `/` removed at load.
    pub path_replacement: VariableMap,
    /// When set, `/register-worker` needs a Bearer JWT signed with it.
    pub worker_registration_secret: String,
    /// Largest accepted request body, in bytes (413 above it).
    pub max_request_body: usize,
    /// Compress pushes to the Flamenco Server with gzip.
    pub upstream_gzip: UpstreamGzip,
    /// A submitted job may compile into at most this many tasks (standalone mode).
    pub max_tasks_per_job: usize,
    /// Standalone mode: finished jobs not updated for this long are deleted with their
    /// tasks by the cleanup. `None` (the default) keeps them.
    pub job_cleanup_max_age: Option<Duration>,
    /// When set, the job API (`/api/…`) needs `Authorization: Bearer <admin_token>`;
    /// when empty, it only answers clients on the loopback interface.
    pub admin_token: String,
    /// With TLS on: an extra plain-HTTP address (same syntax as `listen`) that answers every
    /// request with 308 to the same path on `https://`. Empty: no redirect listener.
    pub tls_redirect_listen: String,
    /// At most this many client connections are served at once; further connections wait
    /// (in the listen backlog) until one closes.
    pub max_connections: usize,
    /// Largest accepted request head (request line + headers), in bytes (431 above it).
    pub max_header_size: usize,
    /// A client must send a request's head, and then its body, within this time (and
    /// finish a TLS handshake within it); idle keep-alive connections close after it.
    pub request_read_timeout: Duration,
    /// Requests per second one worker may make, on average; 0 turns the limit off.
    pub worker_request_rate: u32,
    /// How many requests one worker may make in a burst above `worker_request_rate`.
    pub worker_request_burst: u32,
    /// At most this many open connections from one client address (an IPv6 /64 counts as
    /// one address) that has no signed-on worker; 0 turns the limit off.
    pub max_connections_per_ip: usize,
    /// Of `max_connections`, this many are kept for addresses with a signed-on worker:
    /// other clients may hold at most `max_connections - reserved_worker_connections`.
    /// Default: a quarter of `max_connections`.
    pub reserved_worker_connections: usize,
    /// At most this many long-lived event streams (`/imagewatch`, …) open at once; more
    /// get 503 with `Retry-After`.
    pub max_streams: usize,
    /// At most this many event streams from one client address.
    pub max_streams_per_ip: usize,
    /// An event stream is ended after this long (browsers reconnect by themselves).
    pub stream_max_lifetime: Duration,
    /// Managers sharing one MongoDB database elect a leader, which alone runs the
    /// once-per-site loops, with a lease of this length (renewed every third of it); a
    /// leader that dies is replaced within it. Default 10 s (docs/operations.md).
    pub leader_lease: Duration,
    /// This Manager's name in the leader lease, `/metrics` and the dashboard; empty: host
    /// name, process id and a random suffix.
    pub instance_name: String,
    /// Extra host names (lower case, no port) the dashboard and `/api/` answer to, besides
    /// `localhost`, IP literals, this machine's host name and `own_url`'s host; `*` answers
    /// to any name (docs/security.md, "DNS rebinding").
    pub allowed_hosts: Vec<String>,
    /// The most bytes of log kept per task (the first and the last half; the lines between
    /// are dropped with a marker); 0 keeps no task logs. Default 1 MiB (docs/storage.md,
    /// "Task logs").
    pub task_log_max_bytes: u64,
    /// Receivers told about job status changes and task failures (docs/webhooks.md).
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// Standalone mode: a task that fails is retried on other workers (as `soft-failed`)
    /// until it has failed on this many distinct workers; then it fails for good. At
    /// least 1 (1: fail at once, as v2). Default 3 (docs/jobs.md, "Retries").
    pub task_fail_after_softfail_count: u32,
    /// Standalone mode: a worker that fails this many tasks of one task type in one job is
    /// blocklisted for that job and type (it gets none of them any more). At least 1.
    /// Default 3 (docs/jobs.md, "Blocklist").
    pub blocklist_threshold: u32,
}

/// `upstream_gzip`: whether task-update pushes are sent gzip-compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamGzip {
    /// Try gzip; if the Server refuses a compressed body (400 or 415), send plain JSON for
    /// the rest of the process. The default.
    #[default]
    Auto,
    /// Always compress.
    On,
    /// Never compress (as v2).
    Off,
}

impl UpstreamGzip {
    /// The config-file spelling: `auto`, `true`, `false`.
    pub fn as_str(&self) -> &'static str {
        match self {
            UpstreamGzip::Auto => "auto",
            UpstreamGzip::On => "true",
            UpstreamGzip::Off => "false",
        }
    }
}

impl<'de> serde::Deserialize<'de> for UpstreamGzip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = UpstreamGzip;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`auto`, `true` or `false`")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<UpstreamGzip, E> {
                Ok(if v {
                    UpstreamGzip::On
                } else {
                    UpstreamGzip::Off
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UpstreamGzip, E> {
                match v.trim().to_ascii_lowercase().as_str() {
                    "auto" => Ok(UpstreamGzip::Auto),
                    "true" | "on" | "yes" => Ok(UpstreamGzip::On),
                    "false" | "off" | "no" => Ok(UpstreamGzip::Off),
                    _ => Err(E::custom(format!(
                        "expected `auto`, `true` or `false`, got {v:?}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl crate::store::sqlite::Synchronous {
    /// The config-file spelling: `normal` or `full`.
    pub fn as_str(&self) -> &'static str {
        match self {
            crate::store::sqlite::Synchronous::Normal => "normal",
            crate::store::sqlite::Synchronous::Full => "full",
        }
    }
}

/// `database_synchronous`: `normal` or `full` (any case).
impl<'de> serde::Deserialize<'de> for crate::store::sqlite::Synchronous {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::store::sqlite::Synchronous;
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Synchronous;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`normal` or `full`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Synchronous, E> {
                match v.trim().to_ascii_lowercase().as_str() {
                    "normal" => Ok(Synchronous::Normal),
                    "full" => Ok(Synchronous::Full),
                    _ => Err(E::custom(format!(
                        "expected `normal` or `full` (SQLite's synchronous setting), got {v:?}"
                    ))),
                }
            }
        }
        d.deserialize_str(V)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: String::new(),
            data_dir: PathBuf::from("./flamenco-data"),
            database_synchronous: crate::store::sqlite::Synchronous::Normal,
            listen: ":8083".to_string(),
            own_url: String::new(),
            flamenco: String::new(),
            manager_id: String::new(),
            manager_secret: String::new(),
            tlskey: String::new(),
            tlscert: String::new(),
            download_task_sleep: Duration::from_secs(300),
            download_task_recheck_throttle: Some(Duration::from_secs(10)),
            task_update_push_max_interval: Duration::from_secs(30),
            task_update_push_max_count: 10,
            cancel_task_fetch_max_interval: Duration::from_secs(10),
            active_task_timeout_interval: Duration::from_secs(60),
            active_task_timeout_startup_delay: Duration::from_secs(300),
            active_worker_timeout_interval: Duration::from_secs(15 * 60),
            task_cleanup_max_age: Duration::from_secs(336 * 3600),
            watch_for_latest_image: String::new(),
            variables: VariableMap::new(),
            path_replacement: VariableMap::new(),
            worker_registration_secret: String::new(),
            max_request_body: 16 * 1024 * 1024,
            upstream_gzip: UpstreamGzip::Auto,
            max_tasks_per_job: crate::jobs::DEFAULT_MAX_TASKS_PER_JOB,
            job_cleanup_max_age: None,
            admin_token: String::new(),
            tls_redirect_listen: String::new(),
            max_connections: 1024,
            max_header_size: 64 * 1024,
            request_read_timeout: Duration::from_secs(30),
            worker_request_rate: 50,
            worker_request_burst: 100,
            max_connections_per_ip: 64,
            reserved_worker_connections: 1024 / 4,
            max_streams: 64,
            max_streams_per_ip: 8,
            stream_max_lifetime: Duration::from_secs(3600),
            leader_lease: crate::leader::DEFAULT_LEADER_LEASE,
            instance_name: String::new(),
            allowed_hosts: Vec::new(),
            task_log_max_bytes: crate::store::logs::DEFAULT_TASK_LOG_MAX_BYTES,
            webhooks: Vec::new(),
            task_fail_after_softfail_count:
                crate::jobs::retry::DEFAULT_TASK_FAIL_AFTER_SOFTFAIL_COUNT,
            blocklist_threshold: crate::jobs::retry::DEFAULT_BLOCKLIST_THRESHOLD,
        }
    }
}

/// A configuration problem, with enough detail to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// How the configuration was found.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigSource {
    File(PathBuf),
    /// No file given and none in the working directory: defaults apply.
    Defaults,
}

impl Config {
    /// Load `path`, or `flamenco-manager.yaml` in the working directory when `path` is
    /// `None` (a missing default file means defaults).
    ///
    /// An explicit `path` that cannot be read (including one that does not exist) is an
    /// error. Without `path`, only a missing default file falls back to defaults; any
    /// other read error (permissions, a directory by that name, …) is reported.
    ///
    /// Relative paths in the file are relative to the file's directory
    /// ([`Config::resolve_paths`]).
    pub fn load(path: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if !explicit && err.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Config::default(), ConfigSource::Defaults));
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let mut config = Config::from_yaml(&text, &path)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok((config, ConfigSource::File(path)))
    }

    /// Make the relative paths of a file's settings relative to `dir`, the file's
    /// directory: `data_dir` (its default `./flamenco-data` included), `tlscert`, `tlskey`
    /// and `watch_for_latest_image`. Absolute paths and empty settings are kept. Called by
    /// [`Config::load`]; without a file, relative paths stay relative to the working
    /// directory.
    pub fn resolve_paths(&mut self, dir: &Path) {
        if dir.as_os_str().is_empty() {
            return;
        }
        self.data_dir = relative_to(dir, &self.data_dir);
        for value in [
            &mut self.tlscert,
            &mut self.tlskey,
            &mut self.watch_for_latest_image,
        ] {
            if !value.trim().is_empty() {
                *value = relative_to(dir, Path::new(value.as_str()))
                    .to_string_lossy()
                    .into_owned();
            }
        }
    }

    /// Parse YAML text; `path` is only used in messages.
    ///
    /// Empty text, or text with only comments, gives the defaults. Keys present override
    /// the defaults. `path_replacement` values lose all trailing `/`.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };

        // First pass: generic YAML, to report syntax errors, every unknown key at once,
        // and to recognise an empty document.
        let generic: serde_yaml::Value = serde_yaml::from_str(text).map_err(|err| {
            let message = err.to_string();
            // A duplicate key is reported at the start of its mapping; point at the key.
            invalid(duplicate_key_message(&message, text).unwrap_or(message))
        })?;
        match &generic {
            serde_yaml::Value::Null => return Ok(Config::default()),
            serde_yaml::Value::Mapping(map) => {
                let unknown = unknown_keys(map, text);
                if !unknown.is_empty() {
                    return Err(invalid(unknown.join("; ")));
                }
            }
            other => {
                return Err(invalid(format!(
                    "expected a mapping of settings (key: value) at the top level, found {}",
                    yaml_kind(other)
                )))
            }
        }

        // Second pass: typed, from the text so that errors carry key, line and column.
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|err| invalid(err.to_string()))?;
        raw.into_config().map_err(invalid)
    }

    /// True when a Flamenco Server URL is configured.
    pub fn is_upstream(&self) -> bool {
        !self.flamenco.trim().is_empty()
    }

    /// A copy with secrets masked: `manager_secret`, `worker_registration_secret`,
    /// `admin_token` and the password in `database_url` become `****` (empty values stay
    /// empty, so "not set" remains visible).
    pub fn masked(&self) -> Config {
        let mut copy = self.clone();
        copy.manager_secret = mask(&self.manager_secret);
        copy.worker_registration_secret = mask(&self.worker_registration_secret);
        copy.admin_token = mask(&self.admin_token);
        copy.database_url = mask_url_password(&self.database_url);
        copy
    }

    /// The effective settings as YAML (every key, in the order of manager-v2.md §1.2 plus
    /// the additions), secrets masked as by [`Config::masked`]. Durations are written in
    /// the same syntax the loader accepts, so the output can be loaded again (apart from the
    /// masked secrets). A "never" `download_task_recheck_throttle` is written as `-1s`.
    pub fn describe_effective(&self) -> String {
        use serde_yaml::{Mapping, Value};
        let c = self.masked();
        let mut m = Mapping::new();
        let mut put = |key: &str, value: Value| {
            m.insert(Value::String(key.to_string()), value);
        };
        let s = |v: &str| Value::String(v.to_string());
        let d = |v: Duration| Value::String(format_duration(v));
        let vars = |map: &VariableMap| {
            let mut out = Mapping::new();
            for (name, platforms) in map {
                let mut p = Mapping::new();
                for (platform, value) in platforms {
                    p.insert(s(platform), s(value));
                }
                out.insert(s(name), Value::Mapping(p));
            }
            Value::Mapping(out)
        };
        put("database_url", s(&c.database_url));
        put("data_dir", s(&c.data_dir.to_string_lossy()));
        put("database_synchronous", s(c.database_synchronous.as_str()));
        put("listen", s(&c.listen));
        put("own_url", s(&c.own_url));
        put("flamenco", s(&c.flamenco));
        put("manager_id", s(&c.manager_id));
        put("manager_secret", s(&c.manager_secret));
        put("tlskey", s(&c.tlskey));
        put("tlscert", s(&c.tlscert));
        put("download_task_sleep", d(c.download_task_sleep));
        put(
            "download_task_recheck_throttle",
            match c.download_task_recheck_throttle {
                Some(v) => d(v),
                None => s("-1s"),
            },
        );
        put(
            "task_update_push_max_interval",
            d(c.task_update_push_max_interval),
        );
        put(
            "task_update_push_max_count",
            Value::Number(c.task_update_push_max_count.into()),
        );
        put(
            "cancel_task_fetch_max_interval",
            d(c.cancel_task_fetch_max_interval),
        );
        put(
            "active_task_timeout_interval",
            d(c.active_task_timeout_interval),
        );
        put(
            "active_task_timeout_startup_delay",
            d(c.active_task_timeout_startup_delay),
        );
        put(
            "active_worker_timeout_interval",
            d(c.active_worker_timeout_interval),
        );
        put("task_cleanup_max_age", d(c.task_cleanup_max_age));
        put("watch_for_latest_image", s(&c.watch_for_latest_image));
        put("variables", vars(&c.variables));
        put("path_replacement", vars(&c.path_replacement));
        put(
            "worker_registration_secret",
            s(&c.worker_registration_secret),
        );
        put(
            "max_request_body",
            Value::Number((c.max_request_body as u64).into()),
        );
        put("upstream_gzip", s(c.upstream_gzip.as_str()));
        put(
            "max_tasks_per_job",
            Value::Number((c.max_tasks_per_job as u64).into()),
        );
        if let Some(age) = c.job_cleanup_max_age {
            put("job_cleanup_max_age", d(age));
        }
        put("admin_token", s(&c.admin_token));
        put("tls_redirect_listen", s(&c.tls_redirect_listen));
        put(
            "max_connections",
            Value::Number((c.max_connections as u64).into()),
        );
        put(
            "max_header_size",
            Value::Number((c.max_header_size as u64).into()),
        );
        put("request_read_timeout", d(c.request_read_timeout));
        put(
            "worker_request_rate",
            Value::Number(c.worker_request_rate.into()),
        );
        put(
            "worker_request_burst",
            Value::Number(c.worker_request_burst.into()),
        );
        put(
            "max_connections_per_ip",
            Value::Number((c.max_connections_per_ip as u64).into()),
        );
        put(
            "reserved_worker_connections",
            Value::Number((c.reserved_worker_connections as u64).into()),
        );
        put("max_streams", Value::Number((c.max_streams as u64).into()));
        put(
            "max_streams_per_ip",
            Value::Number((c.max_streams_per_ip as u64).into()),
        );
        put("stream_max_lifetime", d(c.stream_max_lifetime));
        put("leader_lease", d(c.leader_lease));
        put("instance_name", s(&c.instance_name));
        put(
            "allowed_hosts",
            Value::Sequence(c.allowed_hosts.iter().map(|h| s(h)).collect()),
        );
        put(
            "task_log_max_bytes",
            Value::Number(c.task_log_max_bytes.into()),
        );
        put(
            "webhooks",
            Value::Sequence(
                c.webhooks
                    .iter()
                    .map(|h| {
                        let mut w = serde_yaml::Mapping::new();
                        w.insert(s("url"), s(&h.url));
                        w.insert(s("secret"), s(&mask(&h.secret)));
                        w.insert(
                            s("events"),
                            Value::Sequence(h.events.iter().map(|e| s(e.as_str())).collect()),
                        );
                        Value::Mapping(w)
                    })
                    .collect(),
            ),
        );
        put(
            "task_fail_after_softfail_count",
            Value::Number(c.task_fail_after_softfail_count.into()),
        );
        put(
            "blocklist_threshold",
            Value::Number(c.blocklist_threshold.into()),
        );
        serde_yaml::to_string(&Value::Mapping(m))
            .unwrap_or_else(|err| format!("# cannot describe the configuration: {err}\n"))
    }
}

/// `path` joined to `dir` when relative (without `.` components), `path` itself when absolute.
fn relative_to(dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let joined: PathBuf = dir
        .join(path)
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    if joined.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        joined
    }
}

/// Every key the file may contain, in documentation order.
pub const KNOWN_KEYS: &[&str] = &[
    "database_url",
    "data_dir",
    "database_synchronous",
    "listen",
    "own_url",
    "flamenco",
    "manager_id",
    "manager_secret",
    "tlskey",
    "tlscert",
    "download_task_sleep",
    "download_task_recheck_throttle",
    "task_update_push_max_interval",
    "task_update_push_max_count",
    "cancel_task_fetch_max_interval",
    "active_task_timeout_interval",
    "active_task_timeout_startup_delay",
    "active_worker_timeout_interval",
    "task_cleanup_max_age",
    "watch_for_latest_image",
    "variables",
    "path_replacement",
    "worker_registration_secret",
    "max_request_body",
    "upstream_gzip",
    "max_tasks_per_job",
    "admin_token",
    "job_cleanup_max_age",
    "tls_redirect_listen",
    "max_connections",
    "max_header_size",
    "request_read_timeout",
    "worker_request_rate",
    "worker_request_burst",
    "max_connections_per_ip",
    "reserved_worker_connections",
    "max_streams",
    "max_streams_per_ip",
    "stream_max_lifetime",
    "leader_lease",
    "instance_name",
    "allowed_hosts",
    "task_log_max_bytes",
    "task_fail_after_softfail_count",
    "blocklist_threshold",
    "webhooks",
];

const MASK: &str = "****";

fn mask(secret: &str) -> String {
    if secret.is_empty() {
        String::new()
    } else {
        MASK.to_string()
    }
}

/// `mongodb://user:pass@host/db` → `mongodb://user:****@host/db`; URLs without a
/// password are returned unchanged.
fn mask_url_password(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_string();
    };
    let password_start = after_scheme + colon + 1;
    let password_end = after_scheme + at;
    format!("{}{}{}", &url[..password_start], MASK, &url[password_end..])
}

fn yaml_kind(value: &serde_yaml::Value) -> &'static str {
    use serde_yaml::Value;
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// One message per top-level key that is not a known setting, with its line when it can
/// be found and a suggestion when a known key is close.
fn unknown_keys(map: &serde_yaml::Mapping, text: &str) -> Vec<String> {
    let mut messages = Vec::new();
    let mut all_suggested = true;
    for key in map.keys() {
        let name = match key {
            serde_yaml::Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        };
        if KNOWN_KEYS.contains(&name.as_str()) {
            continue;
        }
        let mut message = format!("unknown key `{name}`");
        let mut notes = Vec::new();
        if let Some(line) = find_key_line(text, &name) {
            notes.push(format!("line {line}"));
        }
        match suggest_key(&name) {
            Some(suggestion) => notes.push(format!("did you mean `{suggestion}`?")),
            None => all_suggested = false,
        }
        if !notes.is_empty() {
            message.push_str(&format!(" ({})", notes.join("; ")));
        }
        messages.push(message);
    }
    if !messages.is_empty() && !all_suggested {
        messages.push(format!("known keys: {}", KNOWN_KEYS.join(", ")));
    }
    messages
}

/// "duplicate key `k` (line N)" for yaml_serde's "duplicate entry with key \"k\"", with
/// the line of the key's second occurrence (at any indentation).
fn duplicate_key_message(message: &str, text: &str) -> Option<String> {
    const MARKER: &str = "duplicate entry with key \"";
    let start = message.find(MARKER)? + MARKER.len();
    let key = &message[start..];
    let key = &key[..key.find('"')?];
    let candidates = [key.to_string(), format!("\"{key}\""), format!("'{key}'")];
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim_start().trim_start_matches("- ");
            candidates.iter().any(|c| {
                line.strip_prefix(c.as_str())
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
        })
        .nth(1)
        .map(|(i, _)| i + 1);
    Some(match line {
        Some(line) => format!("duplicate key `{key}` (line {line})"),
        None => format!("duplicate key `{key}`"),
    })
}

/// The 1-based line of a top-level `key:` (plain or quoted), if there is one.
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let candidates = [key.to_string(), format!("\"{key}\""), format!("'{key}'")];
    text.lines()
        .position(|line| {
            candidates.iter().any(|c| {
                line.strip_prefix(c.as_str())
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
        })
        .map(|i| i + 1)
}

/// A known key close to `unknown`: v2's old `*_seconds` names, or a small typo.
fn suggest_key(unknown: &str) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase();
    for suffix in ["_seconds", "_secs", "_sec", "_s"] {
        if let Some(stem) = lower.strip_suffix(suffix) {
            if let Some(k) = KNOWN_KEYS.iter().find(|k| **k == stem) {
                return Some(k);
            }
        }
    }
    KNOWN_KEYS
        .iter()
        .map(|k| (levenshtein(&lower, k), *k))
        .filter(|(dist, k)| *dist <= 2.max(k.len() / 5))
        .min_by_key(|(dist, _)| *dist)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------
// Typed parsing.

/// The file as written: every key optional, unknown keys refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database_url: Option<String>,
    data_dir: Option<String>,
    database_synchronous: Option<crate::store::sqlite::Synchronous>,
    listen: Option<String>,
    own_url: Option<String>,
    flamenco: Option<String>,
    manager_id: Option<String>,
    manager_secret: Option<String>,
    tlskey: Option<String>,
    tlscert: Option<String>,
    download_task_sleep: Option<NonNegativeDuration>,
    download_task_recheck_throttle: Option<SignedDuration>,
    task_update_push_max_interval: Option<NonNegativeDuration>,
    task_update_push_max_count: Option<PositiveCount>,
    cancel_task_fetch_max_interval: Option<NonNegativeDuration>,
    active_task_timeout_interval: Option<NonNegativeDuration>,
    active_task_timeout_startup_delay: Option<NonNegativeDuration>,
    active_worker_timeout_interval: Option<NonNegativeDuration>,
    task_cleanup_max_age: Option<NonNegativeDuration>,
    watch_for_latest_image: Option<String>,
    variables: Option<VariableMap>,
    path_replacement: Option<VariableMap>,
    worker_registration_secret: Option<String>,
    max_request_body: Option<PositiveCount>,
    upstream_gzip: Option<UpstreamGzip>,
    max_tasks_per_job: Option<PositiveCount>,
    job_cleanup_max_age: Option<NonNegativeDuration>,
    admin_token: Option<String>,
    tls_redirect_listen: Option<String>,
    max_connections: Option<PositiveCount>,
    max_header_size: Option<PositiveCount>,
    request_read_timeout: Option<NonNegativeDuration>,
    worker_request_rate: Option<u32>,
    worker_request_burst: Option<PositiveCount>,
    max_connections_per_ip: Option<u64>,
    reserved_worker_connections: Option<u64>,
    max_streams: Option<PositiveCount>,
    max_streams_per_ip: Option<PositiveCount>,
    stream_max_lifetime: Option<NonNegativeDuration>,
    leader_lease: Option<NonNegativeDuration>,
    instance_name: Option<String>,
    allowed_hosts: Option<Vec<AllowedHost>>,
    task_log_max_bytes: Option<u64>,
    webhooks: Option<Vec<crate::webhooks::WebhookConfig>>,
    task_fail_after_softfail_count: Option<PositiveCount>,
    blocklist_threshold: Option<PositiveCount>,
}

impl RawConfig {
    fn into_config(self) -> Result<Config, String> {
        let mut c = Config::default();
        macro_rules! set {
            ($field:ident) => {
                if let Some(v) = self.$field {
                    c.$field = v.into();
                }
            };
        }
        set!(database_url);
        set!(data_dir);
        set!(database_synchronous);
        set!(listen);
        set!(own_url);
        set!(flamenco);
        set!(manager_id);
        set!(manager_secret);
        set!(tlskey);
        set!(tlscert);
        set!(download_task_sleep);
        set!(task_update_push_max_interval);
        set!(cancel_task_fetch_max_interval);
        set!(active_task_timeout_interval);
        set!(active_task_timeout_startup_delay);
        set!(active_worker_timeout_interval);
        set!(task_cleanup_max_age);
        set!(watch_for_latest_image);
        set!(worker_registration_secret);
        set!(upstream_gzip);
        set!(admin_token);
        set!(tls_redirect_listen);
        set!(request_read_timeout);
        if let Some(lease) = self.leader_lease {
            c.leader_lease = crate::leader::check_lease(lease.into())?;
        }
        if let Some(name) = self.instance_name {
            c.instance_name = crate::leader::check_instance_name(&name)?;
        }
        if let Some(v) = self.worker_request_rate {
            c.worker_request_rate = v;
        }
        if let Some(hosts) = self.allowed_hosts {
            c.allowed_hosts = hosts.into_iter().map(|AllowedHost(h)| h).collect();
        }
        serving_limits(
            &mut c,
            self.max_connections,
            self.max_header_size,
            self.worker_request_burst,
        )?;
        starvation_limits(
            &mut c,
            StarvationKeys {
                max_connections_per_ip: self.max_connections_per_ip,
                reserved_worker_connections: self.reserved_worker_connections,
                max_streams: self.max_streams,
                max_streams_per_ip: self.max_streams_per_ip,
                stream_max_lifetime: self.stream_max_lifetime,
            },
        )?;
        if let Some(v) = self.download_task_recheck_throttle {
            c.download_task_recheck_throttle = (!v.negative).then_some(v.magnitude);
        }
        if let Some(PositiveCount(n)) = self.task_update_push_max_count {
            c.task_update_push_max_count = u32::try_from(n).map_err(|_| {
                format!(
                    "task_update_push_max_count: {n} is too large (at most {})",
                    u32::MAX
                )
            })?;
        }
        if let Some(PositiveCount(n)) = self.max_request_body {
            c.max_request_body = usize::try_from(n)
                .map_err(|_| format!("max_request_body: {n} is too large for this platform"))?;
        }
        if let Some(age) = self.job_cleanup_max_age {
            c.job_cleanup_max_age = Some(age.into());
        }
        if let Some(PositiveCount(n)) = self.max_tasks_per_job {
            c.max_tasks_per_job = usize::try_from(n)
                .map_err(|_| format!("max_tasks_per_job: {n} is too large for this platform"))?;
        }
        if let Some(n) = self.task_log_max_bytes {
            let min = crate::store::logs::MIN_TASK_LOG_MAX_BYTES;
            if n != 0 && n < min {
                return Err(format!(
                    "task_log_max_bytes: {n} is too small: use 0 to keep no task logs, or at least {min}"
                ));
            }
            c.task_log_max_bytes = n;
        }
        if let Some(hooks) = self.webhooks {
            crate::webhooks::validate_all(&hooks)?;
            c.webhooks = hooks;
        }
        if let Some(PositiveCount(n)) = self.task_fail_after_softfail_count {
            c.task_fail_after_softfail_count = u32::try_from(n).map_err(|_| {
                format!(
                    "task_fail_after_softfail_count: {n} is too large; use a number of workers \
                     between 1 and {}",
                    u32::MAX
                )
            })?;
        }
        if let Some(PositiveCount(n)) = self.blocklist_threshold {
            c.blocklist_threshold = u32::try_from(n).map_err(|_| {
                format!(
                    "blocklist_threshold: {n} is too large; use a number of failed tasks \
                     between 1 and {}",
                    u32::MAX
                )
            })?;
        }
        if let Some(v) = self.variables {
            c.variables = v;
        }
        if let Some(mut v) = self.path_replacement {
            for platforms in v.values_mut() {
                for value in platforms.values_mut() {
                    let trimmed_len = value.trim_end_matches('/').len();
                    value.truncate(trimmed_len);
                }
            }
            c.path_replacement = v;
        }

        let clashes: Vec<String> = c
            .variables
            .keys()
            .filter(|name| c.path_replacement.contains_key(*name))
            .map(|name| {
                format!("variable '{name}' is defined as both a regular and a path replacement variable")
            })
            .collect();
        if !clashes.is_empty() {
            return Err(clashes.join("; "));
        }
        check_tls_settings(&c)?;
        Ok(c)
    }
}

/// The smallest `max_header_size` accepted: real workers send a few hundred bytes of
/// headers, and anything under this would refuse ordinary clients.
pub const MIN_HEADER_SIZE: usize = 1024;

/// `max_connections`, `max_header_size`, `worker_request_burst`: counts with their own bounds.
fn serving_limits(
    c: &mut Config,
    max_connections: Option<PositiveCount>,
    max_header_size: Option<PositiveCount>,
    worker_request_burst: Option<PositiveCount>,
) -> Result<(), String> {
    if let Some(PositiveCount(n)) = max_connections {
        // A tokio semaphore holds at most usize::MAX >> 3 permits.
        c.max_connections = usize::try_from(n)
            .ok()
            .filter(|n| *n <= usize::MAX >> 3)
            .ok_or_else(|| format!("max_connections: {n} is too large"))?;
    }
    if let Some(PositiveCount(n)) = max_header_size {
        let n = usize::try_from(n)
            .map_err(|_| format!("max_header_size: {n} is too large for this platform"))?;
        if n < MIN_HEADER_SIZE {
            return Err(format!(
                "max_header_size: {n} bytes is too small for ordinary clients; use at least {MIN_HEADER_SIZE} (the default is 65536)"
            ));
        }
        c.max_header_size = n;
    }
    if let Some(PositiveCount(n)) = worker_request_burst {
        c.worker_request_burst = u32::try_from(n).map_err(|_| {
            format!(
                "worker_request_burst: {n} is too large (at most {})",
                u32::MAX
            )
        })?;
    }
    Ok(())
}

/// The keys that keep clients from starving workers (docs/security.md, "Connection
/// starvation"), as written in the file.
struct StarvationKeys {
    max_connections_per_ip: Option<u64>,
    reserved_worker_connections: Option<u64>,
    max_streams: Option<PositiveCount>,
    max_streams_per_ip: Option<PositiveCount>,
    stream_max_lifetime: Option<NonNegativeDuration>,
}

/// `max_connections_per_ip`, `reserved_worker_connections` (default: a quarter of
/// `max_connections`, which must be set first), `max_streams`, `max_streams_per_ip`,
/// `stream_max_lifetime`.
fn starvation_limits(c: &mut Config, keys: StarvationKeys) -> Result<(), String> {
    let count = |key: &str, n: u64| {
        usize::try_from(n).map_err(|_| format!("{key}: {n} is too large for this platform"))
    };
    if let Some(n) = keys.max_connections_per_ip {
        c.max_connections_per_ip = count("max_connections_per_ip", n)?;
    }
    c.reserved_worker_connections = match keys.reserved_worker_connections {
        None => c.max_connections / 4,
        Some(n) => {
            let n = count("reserved_worker_connections", n)?;
            if n >= c.max_connections {
                return Err(format!(
                    "reserved_worker_connections: {n} leaves no connection for anyone else: it must be less than max_connections ({}); the default is a quarter of it",
                    c.max_connections
                ));
            }
            n
        }
    };
    if let Some(PositiveCount(n)) = keys.max_streams {
        c.max_streams = count("max_streams", n)?;
    }
    if let Some(PositiveCount(n)) = keys.max_streams_per_ip {
        c.max_streams_per_ip = count("max_streams_per_ip", n)?;
    }
    if c.max_streams_per_ip > c.max_streams {
        return Err(format!(
            "max_streams_per_ip ({}) is more than max_streams ({}): one address can never hold more streams than all of them together; lower max_streams_per_ip or raise max_streams",
            c.max_streams_per_ip, c.max_streams
        ));
    }
    if let Some(lifetime) = keys.stream_max_lifetime {
        let lifetime: Duration = lifetime.into();
        if lifetime.is_zero() {
            return Err(
                "stream_max_lifetime: must be more than 0 (an event stream is ended after this long and the browser reconnects; default 1h)"
                    .into(),
            );
        }
        c.stream_max_lifetime = lifetime;
    }
    Ok(())
}

/// TLS needs both `tlscert` and `tlskey`; `tls_redirect_listen` only makes sense with TLS;
/// the read timeout must leave a client some time.
fn check_tls_settings(c: &Config) -> Result<(), String> {
    match (c.tlscert.trim().is_empty(), c.tlskey.trim().is_empty()) {
        (false, true) => {
            return Err(
                "tlscert is set but tlskey is not: HTTPS needs both (the PEM certificate and its private key); set tlskey, or remove tlscert to serve plain HTTP"
                    .into(),
            )
        }
        (true, false) => {
            return Err(
                "tlskey is set but tlscert is not: HTTPS needs both (the PEM certificate and its private key); set tlscert, or remove tlskey to serve plain HTTP"
                    .into(),
            )
        }
        (true, true) if !c.tls_redirect_listen.trim().is_empty() => {
            return Err(
                "tls_redirect_listen is set but TLS is not: it redirects plain HTTP to HTTPS, so set tlscert and tlskey too, or remove it"
                    .into(),
            )
        }
        _ => {}
    }
    if c.request_read_timeout.is_zero() {
        return Err(
            "request_read_timeout: must be more than 0 (it is how long a client may take to send a request; default 30s)"
                .into(),
        );
    }
    Ok(())
}

/// One `allowed_hosts` entry: a host name (letters, digits, `-`, `.`; stored in lower case,
/// a trailing `.` removed), an IP literal, or `*`. Checked in the deserializer so that the
/// error names the key and line.
#[derive(Debug)]
struct AllowedHost(String);

impl<'de> serde::Deserialize<'de> for AllowedHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        check_allowed_host(&raw)
            .map(AllowedHost)
            .map_err(serde::de::Error::custom)
    }
}

/// Validate and normalise one `allowed_hosts` entry.
pub fn check_allowed_host(raw: &str) -> Result<String, String> {
    let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if name == "*" {
        return Ok(name);
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(bare.to_string());
    }
    let hint = "an allowed_hosts entry is a host name as typed in the browser's address bar, without scheme, port or path (e.g. `manager.farm.example`), or `*` for any name";
    if name.is_empty() {
        return Err(format!("empty host name: {hint}"));
    }
    if name.len() > 253 {
        return Err(format!(
            "host name {raw:?} is {} characters long; at most 253: {hint}",
            name.len()
        ));
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !labels_ok {
        return Err(format!("{raw:?} is not a host name: {hint}"));
    }
    Ok(name)
}

impl Config {
    /// True when HTTPS is on: both `tlscert` and `tlskey` are set (manager-v2.md §1.5).
    pub fn tls_enabled(&self) -> bool {
        !self.tlscert.trim().is_empty() && !self.tlskey.trim().is_empty()
    }
}

/// A duration that must not be negative (`0` is fine).
#[derive(Debug)]
struct NonNegativeDuration(Duration);

impl From<NonNegativeDuration> for Duration {
    fn from(d: NonNegativeDuration) -> Duration {
        d.0
    }
}

/// A duration that may be negative.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SignedDuration {
    negative: bool,
    magnitude: Duration,
}

impl<'de> serde::Deserialize<'de> for SignedDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor {
            allow_negative: true,
        })
    }
}

impl<'de> serde::Deserialize<'de> for NonNegativeDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor {
            allow_negative: false,
        })
        .map(|v| NonNegativeDuration(v.magnitude))
    }
}

/// Accepts a Go-style duration string, or a bare number of seconds. The checks happen in
/// the visitor so that the YAML error carries the key and the position.
struct DurationVisitor {
    allow_negative: bool,
}

impl DurationVisitor {
    fn check<E: serde::de::Error>(
        &self,
        v: SignedDuration,
        shown: &str,
    ) -> Result<SignedDuration, E> {
        if v.negative && !v.magnitude.is_zero() && !self.allow_negative {
            return Err(E::custom(format!("must not be negative, got {shown}")));
        }
        Ok(v)
    }

    fn seconds_f64<E: serde::de::Error>(&self, secs: f64) -> Result<SignedDuration, E> {
        let magnitude = Duration::try_from_secs_f64(secs.abs())
            .map_err(|_| E::custom(format!("invalid duration {secs}")))?;
        self.check(
            SignedDuration {
                negative: secs < 0.0,
                magnitude,
            },
            &format!("{secs}"),
        )
    }
}

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = SignedDuration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration such as `30s`, `5m`, `1h30m`, `500ms`, or a number of seconds")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SignedDuration, E> {
        Ok(SignedDuration {
            negative: false,
            magnitude: Duration::from_secs(v),
        })
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SignedDuration, E> {
        self.check(
            SignedDuration {
                negative: v < 0,
                magnitude: Duration::from_secs(v.unsigned_abs()),
            },
            &v.to_string(),
        )
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<SignedDuration, E> {
        self.seconds_f64(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SignedDuration, E> {
        let t = v.trim();
        // A number written as a string ("300") also means seconds.
        if !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
        {
            if let Ok(secs) = t.parse::<f64>() {
                if secs.is_finite() {
                    return self.seconds_f64(secs);
                }
            }
        }
        let parsed = parse_duration(t).map_err(E::custom)?;
        self.check(parsed, t)
    }
}

/// A whole number ≥ 1.
#[derive(Debug)]
struct PositiveCount(u64);

impl<'de> serde::Deserialize<'de> for PositiveCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_u64(CountVisitor)
    }
}

struct CountVisitor;

impl serde::de::Visitor<'_> for CountVisitor {
    type Value = PositiveCount;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a whole number of at least 1")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PositiveCount, E> {
        if v == 0 {
            return Err(E::custom("must be at least 1, got 0"));
        }
        Ok(PositiveCount(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PositiveCount, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("must be at least 1, got {v}"))),
        }
    }
}

/// Parse a Go-style duration: an optional sign, then one or more decimal numbers (with an
/// optional fraction) each followed by a unit (`ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`),
/// e.g. `1h30m`, `-1.5h`, `500ms`. A lone `0` is allowed without a unit.
fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let err = |why: &str| format!("invalid duration {text:?}: {why}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(SignedDuration {
            negative,
            magnitude: Duration::ZERO,
        });
    }
    if rest.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("expected a number"));
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("missing unit (use ns, us, ms, s, m or h)")),
            other => {
                return Err(err(&format!(
                    "unknown unit {other:?} (use ns, us, ms, s, m or h)"
                )))
            }
        };
        let too_large = || err("too large");
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| too_large())?
        };
        let mut value = int_value.checked_mul(unit_ns).ok_or_else(too_large)?;
        // Fraction digits beyond nanosecond precision cannot matter; keep 18 at most.
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits.parse().map_err(|_| too_large())?;
            let scale = 10u128.pow(frac_digits.len() as u32);
            value = value
                .checked_add(frac * unit_ns / scale)
                .ok_or_else(too_large)?;
        }
        total = total.checked_add(value).ok_or_else(too_large)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err("too large"))?;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(SignedDuration {
        negative,
        magnitude: Duration::new(secs, nanos),
    })
}

/// Write a duration in the syntax [`Config::load`] accepts, compactly: `0s`, `500ms`,
/// `30s`, `5m`, `1h30m`, `336h`, `1m2.5s`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 {
        let (ms, below_ms) = (nanos / 1_000_000, nanos % 1_000_000);
        let (us, below_us) = (nanos / 1_000, nanos % 1_000);
        return if below_ms == 0 {
            format!("{ms}ms")
        } else if below_us == 0 {
            format!("{us}us")
        } else {
            format!("{nanos}ns")
        };
    }
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    } else if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("test.yaml"))
    }

    fn parse_err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn dur(text: &str) -> Result<Duration, String> {
        parse(&format!("download_task_sleep: {text}\n"))
            .map(|c| c.download_task_sleep)
            .map_err(|e| e.to_string())
    }

    /// The unit-test config of manager-v2.md §1.6, with its old `*_seconds` keys removed
    /// (they are errors now).
    const UNITTEST_YAML: &str = r#"
database_url: mongodb://localhost/flamanager_test
listen: '[::0]:8083'
own_url: http://192.168.3.108:8083/
flamenco: http://localhost:51234/
manager_id: 5852bc5198377351f95d103e
manager_secret: SRVwA7wAxPRfudvqTDOLXwPn1cDRIlADz5Ef9kHk7d52Us
variables:
    blender:
        windows: c:/temp/blender.exe
        linux: /opt/myblenderbuild/blender
        darwin: /opt/myblenderbuild/blender
path_replacement:
    render:
        windows: r:/
        linux: /render
        darwin: /Volume/render
    render_long:
        windows: r:/long
        linux: /render/long
        darwin: /Volume/render/long
    job_storage:
        windows: s:/
        linux: /shared/
        darwin: /Volume/shared/
        autumn: hey
"#;

    #[test]
    fn defaults_when_no_file_in_working_directory() {
        // The test runs in the crate directory, which has no flamenco-manager.yaml.
        assert!(!Path::new(DEFAULT_CONFIG_FILE).exists());
        let (config, source) = Config::load(None).expect("defaults");
        assert_eq!(source, ConfigSource::Defaults);
        assert_eq!(config, Config::default());
        assert_eq!(config.listen, ":8083");
        assert_eq!(config.data_dir, PathBuf::from("./flamenco-data"));
        assert_eq!(config.download_task_sleep, Duration::from_secs(300));
        assert_eq!(
            config.download_task_recheck_throttle,
            Some(Duration::from_secs(10))
        );
        assert_eq!(config.task_update_push_max_count, 10);
        assert_eq!(config.task_cleanup_max_age, Duration::from_secs(336 * 3600));
        assert!(!config.is_upstream());
    }

    #[test]
    fn explicit_missing_path_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.yaml");
        let err = Config::load(Some(&missing)).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.yaml"), "{err}");
    }

    #[test]
    fn explicit_path_is_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("manager.yaml");
        std::fs::write(&path, "listen: 127.0.0.1:9999\n").expect("write");
        let (config, source) = Config::load(Some(&path)).expect("loads");
        assert_eq!(source, ConfigSource::File(path));
        assert_eq!(config.listen, "127.0.0.1:9999");
    }

    #[test]
    fn empty_and_comment_only_files_give_defaults() {
        for text in [
            "",
            "\n\n",
            "# just a comment\n  # another\n",
            "---\n",
            "~\n",
        ] {
            assert_eq!(parse(text).expect(text), Config::default(), "{text:?}");
        }
    }

    #[test]
    fn every_key_is_parsed() {
        let text = r#"
database_url: mongodb://user:pw@db.example.com/flamenco
data_dir: /var/lib/flamenco
listen: '[::0]:8083'
own_url: http://manager.local:8083/
flamenco: https://cloud.blender.org/
manager_id: 5852bc5198377351f95d103e
manager_secret: very-secret
tlskey: tls/privkey.pem
tlscert: tls/cert.pem
download_task_sleep: 1m
download_task_recheck_throttle: 5s
task_update_push_max_interval: 5s
task_update_push_max_count: 20
cancel_task_fetch_max_interval: 10s
active_task_timeout_interval: 60s
active_task_timeout_startup_delay: 90s
active_worker_timeout_interval: 300s
task_cleanup_max_age: 336h
watch_for_latest_image: /render/out
variables:
    blender:
        linux: /opt/blender/blender
        windows: c:/blender/
path_replacement:
    render:
        linux: /render/
worker_registration_secret: reg-secret
max_request_body: 1048576
"#;
        let c = parse(text).expect("parses");
        assert_eq!(c.database_url, "mongodb://user:pw@db.example.com/flamenco");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/flamenco"));
        assert_eq!(c.listen, "[::0]:8083");
        assert_eq!(c.own_url, "http://manager.local:8083/");
        assert_eq!(c.flamenco, "https://cloud.blender.org/");
        assert!(c.is_upstream());
        assert_eq!(c.manager_id, "5852bc5198377351f95d103e");
        assert_eq!(c.manager_secret, "very-secret");
        assert_eq!(c.tlskey, "tls/privkey.pem");
        assert_eq!(c.tlscert, "tls/cert.pem");
        assert_eq!(c.download_task_sleep, Duration::from_secs(60));
        assert_eq!(
            c.download_task_recheck_throttle,
            Some(Duration::from_secs(5))
        );
        assert_eq!(c.task_update_push_max_interval, Duration::from_secs(5));
        assert_eq!(c.task_update_push_max_count, 20);
        assert_eq!(c.cancel_task_fetch_max_interval, Duration::from_secs(10));
        assert_eq!(c.active_task_timeout_interval, Duration::from_secs(60));
        assert_eq!(c.active_task_timeout_startup_delay, Duration::from_secs(90));
        assert_eq!(c.active_worker_timeout_interval, Duration::from_secs(300));
        assert_eq!(c.task_cleanup_max_age, Duration::from_secs(336 * 3600));
        assert_eq!(c.watch_for_latest_image, "/render/out");
        assert_eq!(c.variables["blender"]["linux"], "/opt/blender/blender");
        // Plain variables keep their trailing slash.
        assert_eq!(c.variables["blender"]["windows"], "c:/blender/");
        assert_eq!(c.path_replacement["render"]["linux"], "/render");
        assert_eq!(c.worker_registration_secret, "reg-secret");
        assert_eq!(c.max_request_body, 1_048_576);
    }

    #[test]
    fn unit_test_config_trims_trailing_slashes() {
        let c = parse(UNITTEST_YAML).expect("parses");
        let p = &c.path_replacement;
        assert_eq!(p["render"]["windows"], "r:");
        assert_eq!(p["render"]["linux"], "/render");
        assert_eq!(p["render_long"]["windows"], "r:/long");
        assert_eq!(p["job_storage"]["windows"], "s:");
        assert_eq!(p["job_storage"]["linux"], "/shared");
        assert_eq!(p["job_storage"]["darwin"], "/Volume/shared");
        assert_eq!(p["job_storage"]["autumn"], "hey");
        assert_eq!(c.variables["blender"]["windows"], "c:/temp/blender.exe");
        // Every duration default applies.
        assert_eq!(c.download_task_sleep, Duration::from_secs(300));
    }

    #[test]
    fn trailing_slash_trimming_removes_all_slashes_but_not_backslashes() {
        let c = parse(
            "path_replacement:\n  a: {linux: '/', windows: 'r://', mac: '/x//'}\n  b: {windows: 'c:\\'}\n",
        )
        .expect("parses");
        assert_eq!(c.path_replacement["a"]["linux"], "");
        assert_eq!(c.path_replacement["a"]["windows"], "r:");
        assert_eq!(c.path_replacement["a"]["mac"], "/x");
        assert_eq!(c.path_replacement["b"]["windows"], "c:\\");
    }

    #[test]
    fn durations_in_every_form() {
        let cases: &[(&str, Duration)] = &[
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m30s", Duration::from_secs(90)),
            ("336h", Duration::from_secs(336 * 3600)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1h1m1s1ms", Duration::from_millis(3_661_001)),
            ("'45s'", Duration::from_secs(45)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("+3s", Duration::from_secs(3)),
            // A bare number means seconds (v2: nanoseconds).
            ("300", Duration::from_secs(300)),
            ("'300'", Duration::from_secs(300)),
            ("2.5", Duration::from_millis(2500)),
        ];
        for (text, want) in cases {
            assert_eq!(dur(text).as_ref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn duration_errors_name_the_key() {
        for bad in [
            "5d", "1h30", "abc", "''", "s", "1..5s", "'-'", "--5s", "1.5e3s", "[1, 2]",
        ] {
            let err = dur(bad).expect_err(bad);
            assert!(err.contains("download_task_sleep"), "{bad}: {err}");
            assert!(err.contains("line 1"), "{bad}: {err}");
        }
        let err = dur("99999999999999999999h").expect_err("overflow");
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn negative_durations() {
        // Negative recheck throttle means "never".
        let c = parse("download_task_recheck_throttle: -1s\n").expect("parses");
        assert_eq!(c.download_task_recheck_throttle, None);
        let c = parse("download_task_recheck_throttle: -1\n").expect("parses");
        assert_eq!(c.download_task_recheck_throttle, None);
        let c = parse("download_task_recheck_throttle: 0\n").expect("parses");
        assert_eq!(c.download_task_recheck_throttle, Some(Duration::ZERO));
        // Others must not be negative; the error names the key and the line.
        for key in [
            "download_task_sleep",
            "task_update_push_max_interval",
            "cancel_task_fetch_max_interval",
            "active_task_timeout_interval",
            "active_worker_timeout_interval",
            "task_cleanup_max_age",
        ] {
            for value in ["-5s", "-5", "-1h30m"] {
                let err = parse_err(&format!("listen: ':1'\n{key}: {value}\n"));
                assert!(err.contains(key), "{err}");
                assert!(err.contains("negative"), "{err}");
                assert!(err.contains("line 2"), "{err}");
            }
        }
        // "-0s" is zero, not negative.
        assert_eq!(dur("-0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = parse_err("listen: ':8083'\ndownload_task_sleep_seconds: 60s\n");
        assert!(err.contains("download_task_sleep_seconds"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("did you mean `download_task_sleep`"), "{err}");
        assert!(err.contains("test.yaml"), "{err}");

        // Every unknown key is listed; typos get a suggestion.
        let err = parse_err("lisen: x\nfoo: 1\n");
        assert!(
            err.contains("`lisen` (line 1; did you mean `listen`?)"),
            "{err}"
        );
        assert!(err.contains("unknown key `foo` (line 2)"), "{err}");
        assert!(err.contains("known keys: database_url,"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err =
            parse_err("listen: ':8083'\nflamenco: http://x/\ntask_update_push_max_count: lots\n");
        assert!(err.contains("task_update_push_max_count"), "{err}");
        assert!(err.contains("line 3"), "{err}");

        let err = parse_err("max_request_body: 1.5\n");
        assert!(err.contains("max_request_body"), "{err}");
        assert!(err.contains("line 1"), "{err}");

        let err = parse_err("task_update_push_max_count: 0\n");
        assert!(err.contains("task_update_push_max_count"), "{err}");
        assert!(err.contains("at least 1"), "{err}");

        let err = parse_err("# comment\n\nvariables:\n  blender: /opt/blender\n");
        assert!(err.contains("variables.blender"), "{err}");
        assert!(err.contains("line 4"), "{err}");

        let err = parse_err("listen: [1, 2]\n");
        assert!(err.contains("listen"), "{err}");
        assert!(err.contains("line 1"), "{err}");

        let err = parse_err("- a\n- b\n");
        assert!(err.contains("mapping"), "{err}");

        let err = parse_err("listen: ':8083'\n  bad indent: [\n");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn clash_lists_every_clashing_name() {
        let text = r#"
variables:
    render: {linux: /a}
    blender: {linux: /b}
    storage: {linux: /c}
path_replacement:
    render: {linux: /a}
    storage: {linux: /c}
    other: {linux: /d}
"#;
        let err = parse_err(text);
        assert!(
            err.contains(
                "variable 'render' is defined as both a regular and a path replacement variable"
            ),
            "{err}"
        );
        assert!(
            err.contains(
                "variable 'storage' is defined as both a regular and a path replacement variable"
            ),
            "{err}"
        );
        assert!(!err.contains("'blender'"), "{err}");
        assert!(!err.contains("'other'"), "{err}");
    }

    #[test]
    fn masked_and_describe_effective_hide_secrets() {
        let mut c = parse(UNITTEST_YAML).expect("parses");
        c.database_url = "mongodb://admin:hunter2@db:27017/flamenco?authSource=admin".into();
        c.worker_registration_secret = "reg-secret".into();
        let m = c.masked();
        assert_eq!(m.manager_secret, "****");
        assert_eq!(m.worker_registration_secret, "****");
        assert_eq!(
            m.database_url,
            "mongodb://admin:****@db:27017/flamenco?authSource=admin"
        );
        let text = c.describe_effective();
        assert!(
            !text.contains("SRVwA7wAxPRfudvqTDOLXwPn1cDRIlADz5Ef9kHk7d52Us"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("reg-secret"), "{text}");
        assert!(text.contains("task_cleanup_max_age: 336h"), "{text}");
        assert!(text.contains("download_task_sleep: 5m"), "{text}");

        // The description loads again (secrets masked) to the same settings.
        let again = parse(&text).expect("description reloads");
        assert_eq!(again, m);

        // Empty secrets stay empty; URLs without a password are unchanged.
        let d = Config::default().masked();
        assert_eq!(d.manager_secret, "");
        assert_eq!(
            mask_url_password("mongodb://localhost/x"),
            "mongodb://localhost/x"
        );
        assert_eq!(
            mask_url_password("mongodb://user@localhost/x"),
            "mongodb://user@localhost/x"
        );
    }

    #[test]
    fn starvation_keys_defaults_and_validation() {
        let d = Config::default();
        assert_eq!(d.max_connections_per_ip, 64);
        assert_eq!(d.reserved_worker_connections, 256);
        assert_eq!((d.max_streams, d.max_streams_per_ip), (64, 8));
        assert_eq!(d.stream_max_lifetime, Duration::from_secs(3600));

        // The reserve follows max_connections unless it is set.
        let c = parse("max_connections: 100\n").expect("parses");
        assert_eq!(c.reserved_worker_connections, 25);
        let c = parse(
            "max_connections: 100\nreserved_worker_connections: 0\nmax_connections_per_ip: 0\n\
             max_streams: 5\nmax_streams_per_ip: 5\nstream_max_lifetime: 10m\n",
        )
        .expect("parses");
        assert_eq!(c.reserved_worker_connections, 0);
        assert_eq!(
            c.max_connections_per_ip, 0,
            "0 turns the per-address cap off"
        );
        assert_eq!((c.max_streams, c.max_streams_per_ip), (5, 5));
        assert_eq!(c.stream_max_lifetime, Duration::from_secs(600));
        let text = c.describe_effective();
        assert!(text.contains("stream_max_lifetime: 10m"), "{text}");
        assert_eq!(parse(&text).expect("reloads"), c);

        let err = parse_err("max_connections: 10\nreserved_worker_connections: 10\n");
        assert!(
            err.contains("reserved_worker_connections: 10 leaves no connection"),
            "{err}"
        );
        assert!(err.contains("max_connections (10)"), "{err}");
        let err = parse_err("max_streams: 4\n");
        assert!(
            err.contains("max_streams_per_ip (8) is more than max_streams (4)"),
            "{err}"
        );
        let err = parse_err("stream_max_lifetime: 0s\n");
        assert!(
            err.contains("stream_max_lifetime: must be more than 0"),
            "{err}"
        );
        for (key, bad) in [
            ("max_streams", "0"),
            ("max_streams_per_ip", "0"),
            ("max_connections_per_ip", "-1"),
            ("reserved_worker_connections", "many"),
            ("stream_max_lifetime", "-1h"),
        ] {
            let err = parse_err(&format!("listen: ':1'\n{key}: {bad}\n"));
            assert!(err.contains(key), "{key}: {bad}: {err}");
            assert!(err.contains("line 2"), "{key}: {bad}: {err}");
        }
    }

    #[test]
    fn tls_and_serving_limit_keys() {
        let d = Config::default();
        assert!(!d.tls_enabled());
        assert_eq!(d.max_connections, 1024);
        assert_eq!(d.max_header_size, 65536);
        assert_eq!(d.request_read_timeout, Duration::from_secs(30));
        assert_eq!((d.worker_request_rate, d.worker_request_burst), (50, 100));

        let c = parse(
            "tlscert: c.pem\ntlskey: k.pem\ntls_redirect_listen: ':8080'\nmax_connections: 10\n\
             max_header_size: 2048\nrequest_read_timeout: 2s\nworker_request_rate: 0\n\
             worker_request_burst: 7\n",
        )
        .expect("parses");
        assert!(c.tls_enabled());
        assert_eq!(c.tls_redirect_listen, ":8080");
        assert_eq!(c.max_connections, 10);
        assert_eq!(c.max_header_size, 2048);
        assert_eq!(c.request_read_timeout, Duration::from_secs(2));
        assert_eq!((c.worker_request_rate, c.worker_request_burst), (0, 7));
        let text = c.describe_effective();
        assert!(text.contains("request_read_timeout: 2s"), "{text}");
        assert_eq!(parse(&text).expect("reloads"), c);

        // TLS: both or neither; the redirect listener needs TLS.
        let err = parse_err("tlscert: c.pem\n");
        assert!(err.contains("tlscert is set but tlskey is not"), "{err}");
        let err = parse_err("tlskey: k.pem\n");
        assert!(err.contains("tlskey is set but tlscert is not"), "{err}");
        let err = parse_err("tls_redirect_listen: ':80'\n");
        assert!(
            err.contains("tls_redirect_listen is set but TLS is not"),
            "{err}"
        );

        let err = parse_err("max_header_size: 100\n");
        assert!(
            err.contains("max_header_size: 100 bytes is too small"),
            "{err}"
        );
        let err = parse_err("request_read_timeout: 0s\n");
        assert!(
            err.contains("request_read_timeout: must be more than 0"),
            "{err}"
        );
        for (key, bad) in [
            ("max_connections", "0"),
            ("worker_request_burst", "0"),
            ("worker_request_rate", "-1"),
            ("worker_request_rate", "fast"),
            ("request_read_timeout", "-5s"),
        ] {
            let err = parse_err(&format!("{key}: {bad}\n"));
            assert!(err.contains(key), "{key}: {bad}: {err}");
        }
    }

    #[test]
    fn task_fail_after_softfail_count_is_at_least_one() {
        assert_eq!(Config::default().task_fail_after_softfail_count, 3);
        let c = parse("task_fail_after_softfail_count: 5\n").expect("parses");
        assert_eq!(c.task_fail_after_softfail_count, 5);
        assert!(c
            .describe_effective()
            .contains("task_fail_after_softfail_count: 5"));
        let c = parse("task_fail_after_softfail_count: 1\n").expect("parses");
        assert_eq!(c.task_fail_after_softfail_count, 1);
        for bad in ["0", "-1", "many", "99999999999"] {
            let err = parse_err(&format!("task_fail_after_softfail_count: {bad}\n"));
            assert!(
                err.contains("task_fail_after_softfail_count"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn task_log_max_bytes_is_zero_or_at_least_the_minimum() {
        assert_eq!(Config::default().task_log_max_bytes, 1 << 20);
        assert_eq!(
            parse("task_log_max_bytes: 0\n")
                .expect("off")
                .task_log_max_bytes,
            0
        );
        let c = parse("task_log_max_bytes: 4096\n").expect("parses");
        assert_eq!(c.task_log_max_bytes, 4096);
        assert!(c.describe_effective().contains("task_log_max_bytes: 4096"));
        for bad in ["10", "-1", "lots"] {
            let err = parse_err(&format!("task_log_max_bytes: {bad}\n"));
            assert!(err.contains("task_log_max_bytes"), "{bad}: {err}");
        }
    }

    #[test]
    fn blocklist_threshold_is_at_least_one() {
        assert_eq!(Config::default().blocklist_threshold, 3);
        let c = parse("blocklist_threshold: 1\n").expect("parses");
        assert_eq!(c.blocklist_threshold, 1);
        assert!(c.describe_effective().contains("blocklist_threshold: 1"));
        for bad in ["0", "-2", "some", "99999999999"] {
            let err = parse_err(&format!("blocklist_threshold: {bad}\n"));
            assert!(err.contains("blocklist_threshold"), "{bad}: {err}");
        }
    }

    #[test]
    fn job_keys_max_tasks_per_job_and_admin_token() {
        let d = Config::default();
        assert_eq!(d.max_tasks_per_job, 10_000);
        assert_eq!(d.admin_token, "");
        let c = parse("max_tasks_per_job: 500\nadmin_token: s3cret\n").expect("parses");
        assert_eq!(c.max_tasks_per_job, 500);
        assert_eq!(c.admin_token, "s3cret");
        assert_eq!(c.masked().admin_token, "****");
        let text = c.describe_effective();
        assert!(text.contains("max_tasks_per_job: 500"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(parse(&text).expect("reloads").max_tasks_per_job, 500);
        for bad in ["0", "-3", "many", "1.5"] {
            let err = parse_err(&format!("max_tasks_per_job: {bad}\n"));
            assert!(err.contains("max_tasks_per_job"), "{bad}: {err}");
        }
        let err = parse_err("admin_token: [a]\n");
        assert!(err.contains("admin_token"), "{err}");
    }

    #[test]
    fn database_synchronous_values() {
        use crate::store::sqlite::Synchronous;
        assert_eq!(Config::default().database_synchronous, Synchronous::Normal);
        for (text, want) in [
            ("normal", Synchronous::Normal),
            ("NORMAL", Synchronous::Normal),
            ("full", Synchronous::Full),
            ("'Full'", Synchronous::Full),
        ] {
            let c = parse(&format!("database_synchronous: {text}\n")).expect(text);
            assert_eq!(c.database_synchronous, want, "{text}");
            let described = c.describe_effective();
            assert!(
                described.contains(&format!("database_synchronous: {}", want.as_str())),
                "{described}"
            );
            assert_eq!(
                parse(&described).expect("reloads").database_synchronous,
                want
            );
        }
        for bad in ["off", "2", "extra", "true", "[full]"] {
            let err = parse_err(&format!("listen: ':1'\ndatabase_synchronous: {bad}\n"));
            assert!(err.contains("database_synchronous"), "{bad}: {err}");
            assert!(err.contains("line 2"), "{bad}: {err}");
        }
        let err = parse_err("database_synchronous: off\n");
        assert!(err.contains("`normal` or `full`"), "{err}");
    }

    #[test]
    fn duplicate_key_names_key_and_line() {
        let err = parse_err("listen: a\nflamenco: ''\nlisten: b\n");
        assert!(err.contains("listen"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let err = parse_err("variables:\n  a: {linux: x}\n  b: {linux: y}\n  a: {linux: z}\n");
        assert!(err.contains("duplicate key `a` (line 4)"), "{err}");
    }

    #[test]
    fn upstream_gzip_values() {
        assert_eq!(Config::default().upstream_gzip, UpstreamGzip::Auto);
        for (text, want) in [
            ("auto", UpstreamGzip::Auto),
            ("'auto'", UpstreamGzip::Auto),
            ("true", UpstreamGzip::On),
            ("false", UpstreamGzip::Off),
            ("'true'", UpstreamGzip::On),
            ("off", UpstreamGzip::Off),
        ] {
            let c = parse(&format!("upstream_gzip: {text}\n")).expect(text);
            assert_eq!(c.upstream_gzip, want, "{text}");
            // The description says it the same way and loads again.
            let described = c.describe_effective();
            assert!(
                described.contains(&format!("upstream_gzip: {}", want.as_str()))
                    || described.contains(&format!("upstream_gzip: '{}'", want.as_str())),
                "{described}"
            );
            assert_eq!(parse(&described).expect("reloads").upstream_gzip, want);
        }
        let err = parse_err("listen: ':1'\nupstream_gzip: sometimes\n");
        assert!(err.contains("upstream_gzip"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("`auto`, `true` or `false`"), "{err}");
    }

    #[test]
    fn default_description_reloads() {
        let text = Config::default().describe_effective();
        assert!(text.contains("listen:"), "{text}");
        assert_eq!(parse(&text).expect("reloads"), Config::default());
    }

    #[test]
    fn never_throttle_is_described_as_negative() {
        let c = parse("download_task_recheck_throttle: -1s\n").expect("parses");
        let text = c.describe_effective();
        assert!(
            text.contains("download_task_recheck_throttle: -1s"),
            "{text}"
        );
        assert_eq!(parse(&text).expect("reloads"), c);
    }

    #[test]
    fn format_duration_round_trips() {
        for (d, s) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(15), "15us"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(336 * 3600), "336h"),
            (Duration::from_millis(62_500), "1m2.5s"),
            (Duration::from_secs(3601), "1h1s"),
        ] {
            assert_eq!(format_duration(d), s);
            assert_eq!(parse_duration(s).map(|v| v.magnitude), Ok(d), "{s}");
        }
    }

    #[test]
    fn allowed_hosts_are_normalised_and_checked() {
        assert!(Config::default().allowed_hosts.is_empty());
        let c =
            parse("allowed_hosts: [Manager.Farm.Example., render-01, '[::1]', 10.0.0.5, '*']\n")
                .expect("parses");
        assert_eq!(
            c.allowed_hosts,
            ["manager.farm.example", "render-01", "::1", "10.0.0.5", "*"]
        );
        assert!(c.describe_effective().contains("- manager.farm.example"));
        for (bad, why) in [
            ("http://manager.farm", "not a host name"),
            ("manager:8083", "not a host name"),
            ("manager/path", "not a host name"),
            ("''", "empty host name"),
            ("-bad.example", "not a host name"),
        ] {
            let err = parse_err(&format!("allowed_hosts:\n  - ok.example\n  - {bad}\n"));
            assert!(err.contains("allowed_hosts"), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains("line 2"), "{bad}: {err}");
        }
        let err = parse_err("allowed_hosts: manager.farm\n");
        assert!(err.contains("allowed_hosts"), "{err}");
    }
}
