//! Real servers and stand-ins the tests start: one module, `mod support;` in every test crate.

pub mod docs_receiver;
pub mod ha;
pub mod many_teams;
pub mod nomad_standin;
pub mod oidc_issuer;
pub mod orchestrator_standin;
pub mod postgres;
pub mod redis;
pub mod terraform;
pub mod tls;
