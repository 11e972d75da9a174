//! nodewatch agent library: the samplers that read the host, and the pieces the
//! `nodewatch-agent` binary is built from.

pub mod samplers;
