//! TEE_T: TEE_K connects on `/teek` (only TEE_K's pinned key is admitted, so `finished` comes from nowhere
//! else — reference gap 3), clients on `/ws`. A session starts when TEE_K sends `session_created`; TEE_T
//! registers it and echoes `session_created` back, and only then does TEE_K tell the client `session_ready`,
//! so a client's first message (its `redaction_streams`) always finds its session. The steps are in
//! `tee_t::session`.

mod session;

use super::Serving;
use super::attestation::{Attestation, Standalone};
use super::common::{Limits, Routes, accept_until, channel_config};
use crate::proto::Body;
use crate::signing::{Address, Signer};
use crate::wire;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tessera_channel::{Admission, AdmissionRequest, AnyKey, Channel, Identity, PublicKey, Server};
use tessera_session::{CancellationToken, Registry};

/// What TEE_T needs: its channel identity, its signing key, TEE_K's channel key, limits.
pub struct TeeTConfig {
    /// The channel identity clients and TEE_K pin.
    pub identity: Identity,
    /// The secp256k1 key T_OUTPUT is signed with.
    pub signer: Signer,
    /// TEE_K's channel key. `None`: the first TEE_K to connect is pinned for the life of the process
    /// (trust on first use; pin it in production).
    pub tee_k_key: Option<PublicKey>,
    /// Limits and the session deadline.
    pub limits: Limits,
    /// Attestation mode (default [`Standalone`]).
    pub attestation: Arc<dyn Attestation>,
}

impl TeeTConfig {
    /// A configuration with default limits and standalone attestation.
    pub fn new(identity: Identity, signer: Signer, tee_k_key: Option<PublicKey>) -> Self {
        TeeTConfig {
            identity,
            signer,
            tee_k_key,
            limits: Limits::default(),
            attestation: Arc::new(Standalone),
        }
    }

    /// Other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

impl std::fmt::Debug for TeeTConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeTConfig")
            .field("public_key", &self.identity.public_key())
            .field("signer", &self.signer.address())
            .field("tee_k_key", &self.tee_k_key)
            .finish_non_exhaustive()
    }
}

/// What a TEE_T session receives, from either side, in one inbox (one task handles them in order).
pub(crate) enum Event {
    FromK(Body),
    FromClient(Body),
    /// The client's channel claimed this session (its first message); sent once per session, by the one
    /// channel [`Routes::attach`] admitted.
    Attach(tessera_channel::ChannelWriter),
    ClientRefused(String),
    ClientGone,
}

pub(crate) struct Inner {
    pub(crate) signer: Signer,
    pub(crate) limits: Limits,
    pub(crate) sessions: Registry,
    pub(crate) routes: Routes<Event>,
    pub(crate) metrics: super::metrics::ServiceMetrics,
}

/// A running TEE_T.
#[derive(Clone)]
pub struct TeeT {
    inner: Arc<Inner>,
    clients: Server,
    tee_k: Server,
    stop: CancellationToken,
    attestation: Arc<dyn Attestation>,
}

impl std::fmt::Debug for TeeT {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeT")
            .field("public_key", &self.public_key())
            .field("signer", &self.signer_address())
            .field("sessions", &self.inner.sessions.len())
            .finish()
    }
}

impl TeeT {
    /// Starts TEE_T's accept loops (inside a Tokio runtime). Serve [`TeeT::router`] or call [`TeeT::serve`].
    pub fn new(config: TeeTConfig) -> TeeT {
        let limits = config.limits.clone();
        let pinned = Arc::new(Mutex::new(config.tee_k_key));
        let policy = move |request: &AdmissionRequest<'_>| {
            let mut pinned = pinned.lock().unwrap_or_else(|p| p.into_inner());
            match *pinned {
                Some(key) if key == request.peer => Admission::accept(),
                Some(_) => Admission::reject("not the pinned TEE_K"),
                None => {
                    tracing::warn!(key = %request.peer, "no TEE_K key configured: pinning the first TEE_K");
                    *pinned = Some(request.peer);
                    Admission::accept()
                }
            }
        };
        let (tee_k, k_listener) = Server::new(
            config.identity.clone(),
            policy,
            channel_config(),
            limits.channel_registry("tee-t-link"),
        );
        let (clients, c_listener) = Server::new(
            config.identity,
            AnyKey,
            channel_config(),
            limits.channel_registry("tee-t-channel"),
        );
        let inner = Arc::new(Inner {
            signer: config.signer,
            sessions: limits.registry("tee-t"),
            limits,
            routes: Routes::default(),
            metrics: super::metrics::ServiceMetrics::new("tee-t"),
        });
        let stop = CancellationToken::new();
        let k_inner = inner.clone();
        accept_until(stop.clone(), k_listener, move |channel| {
            serve_tee_k(k_inner.clone(), channel)
        });
        let c_inner = inner.clone();
        accept_until(stop.clone(), c_listener, move |channel| {
            serve_client(c_inner.clone(), channel)
        });
        TeeT {
            inner,
            clients,
            tee_k,
            stop,
            attestation: config.attestation,
        }
    }

    /// The channel key clients and TEE_K pin.
    pub fn public_key(&self) -> PublicKey {
        self.clients.public_key()
    }

    /// The address T_OUTPUT's signature recovers to (verifiers pin it).
    pub fn signer_address(&self) -> Address {
        self.inner.signer.address()
    }

    /// The attestation mode.
    pub fn attestation(&self) -> &dyn Attestation {
        &*self.attestation
    }

    /// The registry of protocol sessions.
    pub fn sessions(&self) -> &Registry {
        &self.inner.sessions
    }

    /// The registry of client channel connections.
    pub fn channels(&self) -> &Registry {
        self.clients.registry()
    }

    /// The registry of TEE_K link connections.
    pub fn link_channels(&self) -> &Registry {
        self.tee_k.registry()
    }

    /// An axum router: clients at `/ws`, TEE_K at `/teek`.
    pub fn router(&self) -> Router {
        let (clients, tee_k) = (self.clients.clone(), self.tee_k.clone());
        Router::new()
            .route(
                "/ws",
                get(move |upgrade: WebSocketUpgrade| async move { clients.upgrade(upgrade) }),
            )
            .route(
                "/teek",
                get(move |upgrade: WebSocketUpgrade| async move { tee_k.upgrade(upgrade) }),
            )
    }

    /// Binds `addr` and serves [`TeeT::router`].
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<Serving> {
        Serving::bind(addr, self.router()).await
    }

    /// Stops accepting, ends every session, and waits for them.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.stop.cancel();
        self.inner.sessions.shutdown(grace).await;
        self.clients.registry().shutdown(grace).await;
        self.tee_k.registry().shutdown(grace).await;
    }
}

/// One TEE_K link: `session_created` starts a session; every other message goes to its session's inbox.
fn serve_tee_k(inner: Arc<Inner>, channel: Channel) {
    let link_session = channel.session().clone();
    let (mut reader, writer) = channel.split();
    let _ = link_session.spawn(async move {
        // Cancelled however this task ends (the link lost, closed, or its channel session ended): the
        // sessions this link announced end at once, telling their clients, instead of idling out.
        let link = CancellationToken::new();
        let _lost = link.clone().drop_guard();
        loop {
            let bytes = match reader.recv().await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break,
                // TEE_K going away (1000 normal, 1001 shutting down) is an orderly end, not a fault.
                Err(
                    e @ tessera_channel::ChannelError::PeerClosed {
                        code: 1000 | 1001, ..
                    },
                ) => {
                    tracing::info!(reason = %e, "TEE_K link closed");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TEE_K link lost");
                    break;
                }
            };
            match wire::decode_received(bytes, None) {
                Ok((sid, Body::SessionCreated(_))) => {
                    session::start(inner.clone(), sid, writer.clone(), &link).await;
                }
                Ok((sid, body)) => {
                    if !inner.routes.deliver(&sid, Event::FromK(body)) {
                        tracing::debug!("TEE_K message for a session that is gone");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "bad message from TEE_K"),
            }
        }
    });
}

/// One client channel: each message goes to the session its envelope names. A channel carries one session
/// at a time: the first message of a session attaches the channel to it (one channel per session: a second
/// one is refused), and a message for another session
/// is taken only once that one has ended (a client's next proof on kept channels); otherwise it ends the
/// attached session. A channel that ends tells the session attached to it.
fn serve_client(inner: Arc<Inner>, channel: Channel) {
    let client_session = channel.session().clone();
    let (mut reader, writer) = channel.split();
    let _ = client_session.spawn(async move {
        let mut attached: Option<(crate::wire::WireSessionId, tokio::sync::mpsc::Sender<Event>)> =
            None;
        let idle = inner.limits.idle_timeout;
        loop {
            let received = match tokio::time::timeout(idle, reader.recv()).await {
                Ok(received) => received,
                // A session running on the channel keeps its own idle limit; between sessions it is this.
                Err(_)
                    if attached
                        .as_ref()
                        .is_some_and(|(_, inbox)| !inbox.is_closed()) =>
                {
                    continue;
                }
                Err(_) => {
                    writer.close();
                    return;
                }
            };
            let message = match received {
                Ok(Some(bytes)) => wire::decode_received(bytes, None),
                Ok(None) | Err(_) => {
                    if let Some((_, inbox)) = attached {
                        let _ = inbox.send(Event::ClientGone).await;
                    }
                    return;
                }
            };
            let live = attached.as_ref().filter(|(_, inbox)| !inbox.is_closed());
            let (sid, body) = match (message, live) {
                (Ok(message), _) => message,
                (Err(e), Some((_, inbox))) => {
                    let reason = format!("client message refused: {e}");
                    let _ = inbox.send(Event::ClientRefused(reason)).await;
                    return;
                }
                (Err(e), None) => {
                    let reason = format!("message refused: {e}");
                    let _ = writer.send(wire::error_message(&[0; 16], reason)).await;
                    writer.close();
                    return;
                }
            };
            match live {
                Some((current, inbox)) if *current == sid => {
                    if inbox.send(Event::FromClient(body)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some((_, inbox)) => {
                    let reason = "a message for another session while this one runs".to_string();
                    let _ = inbox.send(Event::ClientRefused(reason)).await;
                    return;
                }
                None => {}
            }
            // Attachment is decided once, under the routes' lock: a channel naming a session another
            // channel already claimed is refused, and nothing it sends (nor its end) reaches the session.
            let inbox = match inner.routes.attach(&sid) {
                Ok(inbox) => inbox,
                Err(refused) => {
                    let _ = writer
                        .send(wire::error_message(&sid, refused.reason()))
                        .await;
                    writer.close();
                    return;
                }
            };
            if inbox.send(Event::Attach(writer.clone())).await.is_err() {
                // The session ended between the attachment and now, and could not reach this writer.
                let ended = "the session ended as this client attached";
                let _ = writer.send(wire::error_message(&sid, ended)).await;
                writer.close();
                return;
            }
            // Refused only once the session has ended; it told this writer why (it took the attachment).
            if inbox.send(Event::FromClient(body)).await.is_err() {
                return;
            }
            attached = Some((sid, inbox));
        }
    });
}
