//! Delivery: wire formats, signatures, the HTTP client, the retry policy, and what operators see
//! and switch (the journal of attempts, pause per endpoint).

pub mod control;
pub mod dispatch;
pub mod endpoint;
pub mod error_class;
pub mod format;
pub mod guarded_dns;
pub mod http;
pub mod journal;
pub mod probe;
pub mod retry;
mod schedule;
pub mod shares;
pub mod sign;
pub mod trust;
