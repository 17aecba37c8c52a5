//! TEE_K: accepts clients on `/ws`, creates one protocol session per client channel, and talks to TEE_T
//! over one persistent pinned channel (`service::peer`). The session's steps are in `tee_k::session`.

mod response;
mod session;

use super::Serving;
use super::attestation::{Attestation, Standalone};
use super::common::{Limits, accept_until, channel_config};
use super::peer::PeerLink;
use crate::signing::{Address, Signer};
use crate::tls_client::RootStore;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use tessera_channel::{AnyKey, Identity, PublicKey, Server};
use tessera_session::{CancellationToken, Registry};

/// What TEE_K needs: its channel identity, its signing key, where TEE_T is and its pinned key, the roots
/// server certificates are validated against, and limits.
pub struct TeeKConfig {
    /// The channel identity clients and TEE_T pin.
    pub identity: Identity,
    /// The secp256k1 key K_OUTPUT is signed with.
    pub signer: Signer,
    /// TEE_T's `/teek` URL, e.g. `ws://127.0.0.1:8081/teek`.
    pub tee_t_url: String,
    /// TEE_T's channel key (pinned).
    pub tee_t_key: PublicKey,
    /// Trust anchors for the websites (default: the Mozilla roots).
    pub roots: RootStore,
    /// Limits and the session deadline.
    pub limits: Limits,
    /// Attestation mode (default [`Standalone`]).
    pub attestation: Arc<dyn Attestation>,
}

impl TeeKConfig {
    /// A configuration with the Mozilla roots, default limits and standalone attestation.
    pub fn new(
        identity: Identity,
        signer: Signer,
        tee_t_url: impl Into<String>,
        tee_t_key: PublicKey,
    ) -> Self {
        TeeKConfig {
            identity,
            signer,
            tee_t_url: tee_t_url.into(),
            tee_t_key,
            roots: RootStore::webpki(),
            limits: Limits::default(),
            attestation: Arc::new(Standalone),
        }
    }

    /// Validates website certificates against `roots` instead.
    pub fn with_roots(mut self, roots: RootStore) -> Self {
        self.roots = roots;
        self
    }

    /// Other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

impl std::fmt::Debug for TeeKConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeKConfig")
            .field("public_key", &self.identity.public_key())
            .field("signer", &self.signer.address())
            .field("tee_t_url", &self.tee_t_url)
            .field("tee_t_key", &self.tee_t_key)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) signer: Signer,
    pub(crate) roots: RootStore,
    pub(crate) limits: Limits,
    pub(crate) sessions: Registry,
    pub(crate) link: PeerLink,
    pub(crate) metrics: super::metrics::ServiceMetrics,
}

/// A running TEE_K.
#[derive(Clone)]
pub struct TeeK {
    inner: Arc<Inner>,
    server: Server,
    stop: CancellationToken,
    attestation: Arc<dyn Attestation>,
}

impl std::fmt::Debug for TeeK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeK")
            .field("public_key", &self.public_key())
            .field("signer", &self.signer_address())
            .field("sessions", &self.inner.sessions.len())
            .finish()
    }
}

impl TeeK {
    /// Starts TEE_K's accept loop (inside a Tokio runtime). Serve [`TeeK::router`] or call [`TeeK::serve`].
    pub fn new(config: TeeKConfig) -> TeeK {
        let limits = config.limits.clone();
        let link = PeerLink::new(
            config.tee_t_url,
            config.tee_t_key,
            config.identity.clone(),
            limits.channel_registry("tee-k-link"),
        );
        let (server, listener) = Server::new(
            config.identity,
            AnyKey,
            channel_config(),
            limits.channel_registry("tee-k-channel"),
        );
        let inner = Arc::new(Inner {
            signer: config.signer,
            roots: config.roots,
            sessions: limits.registry("tee-k"),
            limits,
            link,
            metrics: super::metrics::ServiceMetrics::new("tee-k"),
        });
        let stop = CancellationToken::new();
        let accepting = inner.clone();
        accept_until(stop.clone(), listener, move |channel| {
            session::start(accepting.clone(), channel)
        });
        TeeK {
            inner,
            server,
            stop,
            attestation: config.attestation,
        }
    }

    /// The channel key clients pin.
    pub fn public_key(&self) -> PublicKey {
        self.server.public_key()
    }

    /// The address K_OUTPUT's signature recovers to (verifiers pin it).
    pub fn signer_address(&self) -> Address {
        self.inner.signer.address()
    }

    /// The attestation mode.
    pub fn attestation(&self) -> &dyn Attestation {
        &*self.attestation
    }

    /// The registry of protocol sessions (one per client).
    pub fn sessions(&self) -> &Registry {
        &self.inner.sessions
    }

    /// The registry of client channel connections.
    pub fn channels(&self) -> &Registry {
        self.server.registry()
    }

    /// The registry of the link to TEE_T.
    pub fn link_channels(&self) -> &Registry {
        self.inner.link.registry()
    }

    /// An axum router with the client endpoint at `/ws`.
    pub fn router(&self) -> Router {
        let server = self.server.clone();
        Router::new().route(
            "/ws",
            get(move |upgrade: WebSocketUpgrade| async move { server.upgrade(upgrade) }),
        )
    }

    /// Binds `addr` and serves [`TeeK::router`].
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<Serving> {
        Serving::bind(addr, self.router()).await
    }

    /// Stops accepting, ends every session (each client gets close 1001 or an error), and waits for them.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.stop.cancel();
        self.inner.sessions.shutdown(grace).await;
        self.server.registry().shutdown(grace).await;
        self.inner.link.registry().shutdown(grace).await;
    }
}
