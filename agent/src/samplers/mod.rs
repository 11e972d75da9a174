//! Samplers: each reads one area of the host (/proc, /sys, netlink) into its part
//! of a [`pb::Batch`]. The [`registry::SamplerRegistry`] builds them, records
//! which ones work, runs each at its cadence and keeps going when one fails;
//! [`config::SamplersConfig`] says which ones run and how often.
//!
//! Hot paths keep their /proc files open and re-read them with `pread` into
//! reused buffers (`crate::sys::procfile::ProcFile`); parsers are plain
//! functions over bytes, unit-tested on copies of real /proc files in
//! `fixtures/`.

pub mod config;
pub(crate) mod connections;
pub(crate) mod cpu;
pub mod disk;
pub(crate) mod memory;
pub(crate) mod pressure;
pub(crate) mod processes;
pub mod registry;

use std::time::Duration;

use nodewatch_proto::pb;

/// Errors of a sampler: those of reading the host.
pub use crate::sys::SysError as SamplerError;

/// One source of samples (rezolus style). A failed sampler never stops the agent.
pub trait Sampler: Send {
    /// Short name, e.g. "cpu"; used in logs and in Hello.capabilities.samplers.
    fn name(&self) -> &'static str;
    /// Fills this sampler's part of `batch`.
    fn sample(&mut self, batch: &mut pb::Batch) -> Result<(), SamplerError>;
}

/// A pass that comes a little early still counts as due: calls come once per
/// agent interval with some jitter, and a 10 s cadence must not slip to 11 s.
pub(crate) const CADENCE_SLACK: Duration = Duration::from_millis(200);
