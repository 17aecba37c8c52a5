//! Command-line definition (clap derive) and dispatch.

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

/// Tessera: secure session services on one session runtime.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr; levels come from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The systems, each a subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {}

/// Runs the chosen command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(command) => match command {},
        None => anyhow::bail!("no command given; see `tessera --help`"),
    }
}
