//! Delivery: wire formats, signatures, the HTTP client and the retry policy.

pub mod dispatch;
pub mod format;
pub mod http;
pub mod retry;
pub mod sign;
