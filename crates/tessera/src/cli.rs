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

    /// Worker threads of the async runtime (default: one per core; one for `mcp serve` in front of a
    /// command, whose children do the work). One thread spends ~20 % less CPU per request in an MCP
    /// proxy (no wake-ups between threads; BENCHMARKS.md, mcp); many busy sessions of a URL upstream
    /// want one per core.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The systems, each a subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A tour of every working system on loopback, with real peers on both sides.
    Demo,
    /// The MCP proxy: stdio and Streamable HTTP.
    Mcp(crate::mcp::McpArgs),
    /// Create a channel identity key file, or show its public key.
    Keygen(crate::keygen::KeygenArgs),
    /// The secure channel: echo server and client.
    Channel(crate::channel::ChannelArgs),
    /// Verify an attested HTTPS transcript (a `tessera prove` proof file) offline, against pinned signers.
    Verify(crate::verify::VerifyArgs),
    /// The end-to-end encrypted messaging relay: serve, invite.
    Relay(crate::relay::RelayArgs),
    /// A chat device of a relay account: register, send, listen, users, fingerprint, devices, link.
    Chat(crate::chat::ChatArgs),
    /// TEE_K of attested HTTPS: runs TLS for provers over relayed bytes and holds the keys.
    #[command(name = "tee-k")]
    TeeK(crate::tee::TeeKArgs),
    /// TEE_T of attested HTTPS: verifies and makes AEAD tags without ever holding a key.
    #[command(name = "tee-t")]
    TeeT(crate::tee::TeeTArgs),
    /// Prove an HTTPS page with TEE_K and TEE_T and write a proof file for `tessera verify`.
    Prove(crate::tee::ProveArgs),
}

/// Runs the chosen command.
/// A command that finished and asks the process to exit with `code` at once, without waiting for the
/// runtime's blocking threads: a single-session bridge (`mcp stdio`, `mcp connect`) reads its stdin on one
/// that may never return. Returned as an error so that it passes every `?` up to `main`, which flushes the
/// logs first.
#[derive(Debug)]
pub struct LeaveNow(pub i32);

impl std::fmt::Display for LeaveNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit with status {}", self.0)
    }
}

impl std::error::Error for LeaveNow {}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(command) => match command {
            Command::Demo => crate::demo::run().await,
            Command::Mcp(args) => crate::mcp::run(args).await,
            Command::Keygen(args) => crate::keygen::run(args),
            Command::Channel(args) => crate::channel::run(args).await,
            Command::Verify(args) => crate::verify::run(args),
            Command::Relay(args) => crate::relay::run(args).await,
            Command::Chat(args) => crate::chat::run(args).await,
            Command::TeeK(args) => crate::tee::run_tee_k(args).await,
            Command::TeeT(args) => crate::tee::run_tee_t(args).await,
            Command::Prove(args) => crate::tee::run_prove(args).await,
        },
        None => anyhow::bail!("no command given; see `tessera --help`"),
    }
}
