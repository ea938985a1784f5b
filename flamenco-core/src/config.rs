//! The Manager's settings: `flamenco-manager.yaml`, its defaults and its validation.
//!
//! Keys are v2's (manager-v2.md §1.2) plus `data_dir`, `worker_registration_secret`,
//! `max_request_body`. Durations accept `30s`, `5m`, `1h30m`; a bare integer means
//! seconds. Unknown keys, wrong types and clashing variables are errors that name the key.

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: String::new(),
            data_dir: PathBuf::from("./flamenco-data"),
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
            active_worker_timeout_interval: Duration::from_secs(15 * 60),
            task_cleanup_max_age: Duration::from_secs(336 * 3600),
            watch_for_latest_image: String::new(),
            variables: VariableMap::new(),
            path_replacement: VariableMap::new(),
            worker_registration_secret: String::new(),
            max_request_body: 16 * 1024 * 1024,
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
    pub fn load(path: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
        let _ = path;
        todo!("config loading")
    }

    /// Parse YAML text; `path` is only used in messages.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let _ = (text, path);
        todo!("config parsing")
    }

    /// True when a Flamenco Server URL is configured.
    pub fn is_upstream(&self) -> bool {
        !self.flamenco.trim().is_empty()
    }
}
