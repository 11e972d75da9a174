//! nodewatch collector: ingest from agents, the embedded store, host state and
//! queries. Data flows one way: `grpc::ingest` -> `ingest` -> `store` + `hosts`
//! -> `query` -> `grpc::query`; `metrics` names every series for the store (and
//! the exporters to come); `detect` reads `hosts` and `query` and raises alerts.
//! Only `grpc` knows tonic.

pub mod app;
pub mod config;
pub mod detect;
pub mod grpc;
pub mod hosts;
pub mod ingest;
pub mod metrics;
pub mod query;
pub mod store;
