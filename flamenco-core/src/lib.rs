//! `flamenco-core`: the Flamenco Manager SDK.
//!
//! Everything except serving HTTP: configuration ([`config`]), the data model ([`model`]),
//! persistent state behind the [`store::Store`] trait, the local status machine
//! ([`updates`]), variable substitution ([`variables`]), worker authentication ([`auth`]),
//! and the [`Manager`] facade that the daemon, the CLI, tests and examples all use.

pub mod auth;
pub mod clock;
pub mod config;
pub mod model;
pub mod store;
pub mod updates;
pub mod variables;
