//! Signed webhooks for every sandbox lifecycle change of a self-hosted E2B cluster.
//!
//! Data flows sources → event → outbox → deliver; `cli`, `config` and `server` wire it up.

pub mod admin;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dead_letters;
pub mod deliver;
pub mod demo;
pub mod event;
pub mod health;
pub mod leadership;
pub mod metrics;
pub mod outbox;
pub mod portal;
pub mod postgres;
pub mod receiver;
pub mod reconcile;
pub mod server;
pub mod service;
pub mod source;
pub mod team_scope;
pub mod user_auth;
pub mod util;
