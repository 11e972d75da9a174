//! `cargo xtask bench <name>`: each benchmark runs nodewatch and its reference
//! side by side in one run and reports ratios (see docs/BENCHMARKS.md).

pub mod ingest;
pub mod outage;
pub mod samplers;
pub mod syscalls;
