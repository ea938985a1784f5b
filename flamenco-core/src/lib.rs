//! `flamenco-core`: the Flamenco Manager SDK.
//!
//! Everything except serving HTTP: configuration ([`config`]), the data model ([`model`]),
//! persistent state behind the [`store::Store`] trait, the local status machine
//! ([`updates`]), variable substitution ([`variables`]), worker authentication ([`auth`]),
//! and the [`Manager`] facade that the daemon, the CLI, tests and examples all use.
//! [`upstream`] is the Flamenco Server client and its sync loops (upstream mode).

pub mod auth;
pub mod bulk;
pub mod clock;
pub mod config;
pub mod config_check;
pub mod jobs;
pub mod latest_image;
pub mod leader;
pub mod maintenance;
pub mod manager;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod seen;
pub mod store;
pub mod tags;
pub mod task_log;
#[doc(hidden)]
pub mod testing;
pub mod updates;
pub mod upstream;
pub mod variables;
pub mod webhooks;
pub mod worker_cache;

pub use manager::{ApiError, Manager, NextTask, OpenError, Peer};

/// This program's version, shown on the dashboard and by `flamenco --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
