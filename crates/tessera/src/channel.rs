//! `tessera channel`: the secure channel's echo server and a client, thin layers over `tessera-channel`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use tessera_channel::{
    AllowList, AnyKey, ChannelConfig, Connector, Identity, KnownHosts, PublicKey, Server,
    ServerTrust, Suite,
};
use tessera_session::{Registry, RegistryConfig};
use tokio::io::AsyncBufReadExt;

/// The secure channel (Noise XX over WebSocket).
#[derive(Debug, clap::Args)]
pub struct ChannelArgs {
    #[command(subcommand)]
    pub command: ChannelCommand,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Run an echo server: every message a client sends comes back to it.
    #[command(alias = "echo-server")]
    Serve {
        /// Address to listen on; the channel is served at ws://ADDR/.
        #[arg(long, default_value = "127.0.0.1:7000")]
        listen: SocketAddr,
        /// The server's identity key file (see `tessera keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Admit only these client keys (64 hex digits; repeatable). Default: any key.
        #[arg(long = "allow", value_name = "KEY")]
        allow: Vec<PublicKey>,
        /// Handshake timeout in seconds.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600), default_value_t = 30)]
        handshake_timeout: u64,
        /// On SIGINT/SIGTERM, seconds open channels get to finish before they are cancelled.
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=3600), default_value_t = 5)]
        grace: u64,
    },
    /// Connect to a server, send each message (or each line of stdin) and print the replies.
    Connect {
        /// The server's URL, e.g. ws://127.0.0.1:7000/.
        url: String,
        /// The client's identity key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The server's public key (64 hex digits).
        #[arg(long, value_name = "KEY", required_unless_present = "known_hosts")]
        server_key: Option<PublicKey>,
        /// A known-hosts file: trust on first use, hard failure if the server's key changes.
        #[arg(long, value_name = "FILE", conflicts_with = "server_key")]
        known_hosts: Option<PathBuf>,
        /// Messages to send; without any, lines are read from stdin.
        #[arg(long = "message", short = 'm')]
        messages: Vec<String>,
        /// The channel protocol version to ask for: chachapoly (version 1) or aesgcm (version 2, faster
        /// on bulk data with AES instructions). Servers speak both.
        #[arg(long, value_enum, default_value_t = SuiteArg::Chachapoly)]
        suite: SuiteArg,
    },
}

/// `--suite`: the channel protocol version (docs/channel.md §3).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SuiteArg {
    /// Version 1: Noise_XX_25519_ChaChaPoly_SHA256.
    Chachapoly,
    /// Version 2: Noise_XX_25519_AESGCM_SHA256.
    Aesgcm,
}

impl From<SuiteArg> for Suite {
    fn from(arg: SuiteArg) -> Suite {
        match arg {
            SuiteArg::Chachapoly => Suite::ChaChaPoly,
            SuiteArg::Aesgcm => Suite::AesGcm,
        }
    }
}

/// Runs `tessera channel ...`.
pub async fn run(args: ChannelArgs) -> anyhow::Result<()> {
    match args.command {
        ChannelCommand::Serve {
            listen,
            key,
            allow,
            handshake_timeout,
            grace,
        } => serve(listen, key, allow, handshake_timeout, grace).await,
        ChannelCommand::Connect {
            url,
            key,
            server_key,
            known_hosts,
            messages,
            suite,
        } => {
            let trust = match (server_key, known_hosts) {
                (Some(key), _) => ServerTrust::Key(key),
                (None, Some(file)) => ServerTrust::KnownHosts(Arc::new(KnownHosts::new(file))),
                (None, None) => anyhow::bail!("give --server-key KEY or --known-hosts FILE"),
            };
            connect(url, key, trust, messages, suite.into()).await
        }
    }
}

async fn serve(
    listen: SocketAddr,
    key: PathBuf,
    allow: Vec<PublicKey>,
    handshake_timeout: u64,
    grace: u64,
) -> anyhow::Result<()> {
    let identity = Identity::load(&key)?;
    let config = ChannelConfig {
        handshake_timeout: Duration::from_secs(handshake_timeout),
        ..ChannelConfig::default()
    };
    let registry = Registry::new(RegistryConfig::new("channel"));
    let (server, listener) = if allow.is_empty() {
        Server::new(identity, AnyKey, config, registry)
    } else {
        Server::new(identity, AllowList::new(allow), config, registry)
    };
    // Handlers installed before the service says it listens: a signal from then on stops it gracefully.
    let signals = tessera_session::shutdown::listen();
    let serving = tessera_channel::serve(listen, &server)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    println!(
        "echo server on ws://{}/ with key {}",
        serving.local_addr(),
        server.public_key()
    );
    let echo = tokio::spawn(tessera_channel::echo(listener));
    signals.recv().await;
    let report = serving.shutdown(Duration::from_secs(grace)).await;
    echo.abort();
    tracing::info!(
        finished = report.finished,
        cancelled = report.cancelled,
        "stopped"
    );
    Ok(())
}

async fn connect(
    url: String,
    key: PathBuf,
    trust: ServerTrust,
    messages: Vec<String>,
    suite: Suite,
) -> anyhow::Result<()> {
    let identity = Identity::load(&key)?;
    let connector = Connector::new(
        Registry::new(RegistryConfig::new("channel-client")),
        ChannelConfig {
            suite,
            ..ChannelConfig::default()
        },
    );
    let mut channel = connector.connect(&url, trust, &identity).await?;
    eprintln!(
        "connected to {} (session {}, protocol version {}, channel binding {})",
        channel.peer(),
        channel.session_id(),
        channel.info().suite.version(),
        hex_string(channel.channel_binding())
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut from_args = messages.into_iter();
    let interactive = from_args.len() == 0;
    loop {
        let message = if interactive {
            match lines.next_line().await? {
                Some(line) => line,
                None => break,
            }
        } else {
            match from_args.next() {
                Some(m) => m,
                None => break,
            }
        };
        channel.send(message.into_bytes()).await?;
        match channel.recv().await? {
            Some(reply) => println!("{}", String::from_utf8_lossy(&reply)),
            None => anyhow::bail!("the server closed the channel"),
        }
    }
    channel.close().await;
    Ok(())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
