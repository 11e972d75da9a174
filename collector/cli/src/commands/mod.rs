//! One module per command; each exposes `run` (or `list`/`watch`/`show` for
//! hosts) taking the connection, its arguments and the output format.

pub mod alerts;
pub mod conns;
pub mod disks;
pub mod hosts;
pub mod latency;
pub mod series;
pub mod top;
