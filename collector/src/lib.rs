//! nodewatch collector: ingest from agents, in-memory host state, queries,
//! and the `nodewatch` CLI's client code.

pub mod cli;
pub mod config;
pub mod ingest;
pub mod latency;
pub mod query;
pub mod series_query;
pub mod server;
pub mod state;
pub mod store;
pub mod top;
pub mod validate;
