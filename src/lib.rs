//! Signed webhooks for every sandbox lifecycle change of a self-hosted E2B cluster.
//!
//! Data flows sources → event → outbox → deliver; `cli`, `config` and `server` wire it up.

pub mod cli;
pub mod config;
pub mod deliver;
pub mod event;
pub mod receiver;
pub mod reconcile;
pub mod service;
pub mod outbox;
pub mod server;
pub mod source;
pub mod demo;
