//! The TEE services and the prove client over `tessera-channel` (protocol: `docs/tee-protocol.md`).
//!
//! | module | role |
//! |---|---|
//! | [`tee_k`] | TEE_K: runs TLS over relayed bytes, holds the keys, hands out keystreams and tag secrets, signs K_OUTPUT |
//! | [`tee_t`] | TEE_T: fixes and tags the request, verifies every response tag, signs T_OUTPUT; never holds a key |
//! | [`client`] | the prover: owns the TCP connection to the website, relays, redacts, reveals, assembles the bundle |
//! | [`attestation`] | the [`Attestation`] trait (`standalone` now; Nitro and GCP have room in the bundle) |
//!
//! Each service keeps its protocol sessions in a `tessera-session` registry: one deadline per session, one
//! task per session (its cancellation token stops it), idle sessions swept, keys dropped (and zeroized) when
//! the session's task ends for any reason. A failure ends that session only, with `Error{reason}` to the
//! client and to the other TEE.

pub mod attestation;
pub mod client;
mod common;
mod metrics;
mod peer;
pub mod tee_k;
pub mod tee_t;

pub use attestation::{Attestation, Standalone};
pub use client::{ClientError, ProveRequest, Proved, Prover, Reveal, TeeEndpoint, prove};
pub use common::Limits;
pub use tee_k::{TeeK, TeeKConfig};
pub use tee_t::{TeeT, TeeTConfig};

use std::net::SocketAddr;
use tessera_session::CancellationToken;

/// A service bound to an address (see [`TeeK::serve`], [`TeeT::serve`]).
#[derive(Debug)]
pub struct Serving {
    local_addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Serving {
    pub(crate) async fn bind(addr: SocketAddr, router: axum::Router) -> std::io::Result<Serving> {
        use axum::serve::ListenerExt;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        Ok(Serving {
            local_addr,
            stop,
            task,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients connect to: `ws://ADDR/ws`.
    pub fn client_url(&self) -> String {
        format!("ws://{}/ws", self.local_addr)
    }

    /// Stops accepting connections (sessions are ended by the service's own shutdown).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
