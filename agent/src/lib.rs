//! nodewatch agent: samples this host and streams batches to a collector.

pub mod client;
pub mod config;
pub mod ebpf;
pub mod identity;
pub mod outbox;
pub mod samplers;
mod sys;
pub mod wire;
