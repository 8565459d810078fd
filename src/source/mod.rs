pub mod file;
pub mod nomad;
pub mod redis;
