//! Output for people (tables, charts) and for scripts (JSON).

pub mod chart;
pub mod histogram;
pub mod table;
pub mod units;

use crate::client::CliError;

pub use table::Table;

/// Output format of read commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts (one document on stdout).
    Json,
}

/// Prints a JSON value to stdout.
pub fn print_json(value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.to_string()))?;
    println!("{text}");
    Ok(())
}
