//! Small helpers every layer may use; nothing here imports another module of the crate.

pub mod destination;
pub mod panic;
pub mod redact;
