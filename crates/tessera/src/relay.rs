//! `tessera relay`: the end-to-end encrypted messaging relay (`tessera-relay`) — `serve`, and `invite`
//! to mint invite tokens for an invite-only relay.
//!
//! The relay's channel identity lives in `DATA/relay.key` (created on first start, mode 0600), its
//! database in `DATA/relay.db`. Clients pin the key that `serve` prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use tessera_channel::{AnyKey, ChannelConfig, Identity, Server};
use tessera_relay::server::{Relay, RelayConfig};
use tessera_relay::store::{SqliteStore, StoreLimits};
use tessera_session::{Registry, RegistryConfig};

/// The messaging relay.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    #[command(subcommand)]
    pub command: RelayCommand,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Run the relay; prints its URL and channel key (clients pin the key).
    Serve {
        /// Address to listen on; the relay is served at ws://ADDR/.
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: SocketAddr,
        /// Data directory: relay.key (created on first start) and relay.db.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Serve GET /health and GET /metrics (Prometheus) on this address.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// New accounts need an invite token (`tessera relay invite`).
        #[arg(long)]
        invite_only: bool,
        /// Close a connection that sends no request (ping included) for this many seconds.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=31_536_000), default_value_t = 120)]
        idle_timeout: u64,
        /// Days an undelivered message is kept (and a message id remembered for retries).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3650), default_value_t = 30)]
        message_ttl_days: u64,
        /// Most connections at once.
        #[arg(long, default_value_t = 10_000)]
        max_connections: usize,
        /// Most messages queued (not yet acknowledged) for one device; sends beyond it get queue_full.
        #[arg(long, default_value_t = 10_000)]
        max_queued: u64,
        /// On SIGINT/SIGTERM, seconds open connections get to finish before they are cancelled.
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=3600), default_value_t = 5)]
        grace: u64,
    },
    /// Mint an invite token for one new account (for `tessera chat register --invite`). Works while the
    /// relay runs: it writes the token's hash to the relay's database.
    Invite {
        /// The relay's data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Hours the token stays valid.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=87_600), default_value_t = 168)]
        valid_hours: u64,
    },
}

/// Runs `tessera relay ...`.
pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    match args.command {
        RelayCommand::Serve {
            listen,
            data,
            admin,
            invite_only,
            idle_timeout,
            message_ttl_days,
            max_connections,
            max_queued,
            grace,
        } => {
            let config = RelayConfig {
                invite_only,
                idle_timeout: Duration::from_secs(idle_timeout.max(1)),
                message_ttl: Duration::from_secs(message_ttl_days.max(1) * 24 * 3600),
                ..RelayConfig::default()
            };
            let limits = StoreLimits {
                max_queued_per_device: max_queued.max(1),
            };
            serve(listen, &data, admin, config, limits, max_connections, grace).await
        }
        RelayCommand::Invite { data, valid_hours } => {
            // The relay's own database: a mistyped --data must not make an empty one whose tokens no
            // running relay would accept.
            let db = data.join("relay.db");
            if !db.is_file() {
                anyhow::bail!(
                    "no relay database at {} (start `tessera relay serve --data {}` once first)",
                    db.display(),
                    data.display()
                );
            }
            let store = open_store(&data, StoreLimits::default()).await?;
            let (token, expires_at) = tessera_relay::invite::mint_invite(
                &store,
                Duration::from_secs(valid_hours.max(1) * 3600),
            )
            .await?;
            store.close().await;
            println!("{}", token.as_str());
            eprintln!("invite for one new account, valid until {expires_at} (Unix time)");
            Ok(())
        }
    }
}

async fn open_store(data: &Path, limits: StoreLimits) -> anyhow::Result<SqliteStore> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let path = data.join("relay.db");
    SqliteStore::open_with(&path, limits)
        .await
        .with_context(|| format!("opening {}", path.display()))
}

fn load_or_create_identity(data: &Path) -> anyhow::Result<Identity> {
    let path = data.join("relay.key");
    if path.exists() {
        return Ok(Identity::load(&path)?);
    }
    let identity = Identity::generate();
    identity.save(&path)?;
    tracing::info!(path = %path.display(), "created the relay's identity key");
    Ok(identity)
}

async fn serve(
    listen: SocketAddr,
    data: &Path,
    admin: Option<SocketAddr>,
    config: RelayConfig,
    limits: StoreLimits,
    max_connections: usize,
    grace: u64,
) -> anyhow::Result<()> {
    // The recorder goes in before any metric handle is registered (registry and relay register theirs).
    let metrics = match admin {
        Some(_) => Some(
            tessera_session::metrics::install_prometheus()
                .context("installing the metrics recorder")?,
        ),
        None => None,
    };
    let store = open_store(data, limits).await?;
    let identity = load_or_create_identity(data)?;
    let registry = Registry::new(RegistryConfig {
        max_sessions: max_connections.max(1),
        // A relay connection may stay open for days; the relay's own idle timeout applies instead.
        max_age: None,
        ..RegistryConfig::new("relay")
    });
    // Small WebSocket buffers (4 KiB): relay messages are small, and an idle connection then costs
    // under 20 KB (BENCHMARKS.md).
    let channel = ChannelConfig {
        ws_read_buffer: 4 * 1024,
        ws_write_buffer: 4 * 1024,
        ..ChannelConfig::default()
    };
    let (server, listener) = Server::new(identity, AnyKey, channel, registry);
    // Handlers installed before the service says it listens: a signal from then on stops it gracefully.
    let signals = tessera_session::shutdown::listen();
    let serving = tessera_channel::serve(listen, &server)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let relay = Relay::new(store.clone(), config);
    let expiry = relay.spawn_expiry(Duration::from_secs(3600));
    let accepting = tokio::spawn(relay.run(listener));
    println!(
        "relay on ws://{}/ with key {}",
        serving.local_addr(),
        server.public_key()
    );
    let admin_task = match (admin, metrics) {
        (Some(addr), Some(handle)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("admin: listening on {addr}"))?;
            println!(
                "admin on http://{}/ (/health, /metrics)",
                listener.local_addr()?
            );
            let router = tessera_session::metrics::metrics_router(handle);
            Some(tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "admin server failed");
                }
            }))
        }
        _ => None,
    };
    signals.recv().await;
    let report = serving.shutdown(Duration::from_secs(grace)).await;
    accepting.abort();
    expiry.abort();
    if let Some(task) = admin_task {
        task.abort();
    }
    store.close().await;
    tracing::info!(
        finished = report.finished,
        cancelled = report.cancelled,
        "relay stopped"
    );
    Ok(())
}
