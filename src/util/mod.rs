//! Small helpers every layer may use; nothing here imports another module of the crate.

pub mod admin_token;
pub mod backoff;
pub mod client_address;
pub mod destination;
pub mod duration;
pub mod error;
pub mod failure_throttle;
pub mod panic;
pub mod redact;
pub mod secret;
pub mod time;
