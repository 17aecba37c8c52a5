//! The server side: accept WebSocket connections, run the handshake, hand out authenticated channels.
//!
//! [`Server::new`] returns the [`Server`] (cheap to clone; what routes hold) and the [`Listener`] that
//! yields established [`Channel`]s. Three ways in: [`Server::router`] (an axum route at `/`),
//! [`Server::upgrade`] (inside your own axum handler), [`Server::accept_socket`] (an already upgraded
//! `WebSocket`); [`serve`] binds an address and runs the router.
//!
//! Each connection is a session of the server's [`Registry`]: created before the first byte is read,
//! its handshake runs as one task of that session under one timeout ([`ChannelConfig::handshake_timeout`]):
//! when the timeout fires the handshake future is dropped, so a timed-out handshake cannot complete, and
//! a completed one has no timer left to fire. A failed handshake closes the socket with its close code and
//! ends the session as Failed; nothing of it survives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::SinkExt;
use tessera_session::{FailureReason, Registry, Session};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ChannelConfig;
use crate::error::{ChannelError, close_code};
use crate::frame::MAX_FRAME as FRAME_LIMIT_FOR_WS;
use crate::handshake::{Established, ExpectClientHello};
use crate::identity::{Identity, PublicKey};
use crate::policy::{Admission, AdmissionRequest, ClientPolicy};
use crate::transport::{self, Channel};
use crate::ws::{self, WsMsg, WsSink, WsStream};

struct Inner {
    identity: Identity,
    policy: Box<dyn ClientPolicy>,
    config: ChannelConfig,
    registry: Registry,
    accepted: mpsc::Sender<Channel>,
}

/// The server side of the channel: identity, admission policy, limits, and the session registry.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("public_key", &self.inner.identity.public_key())
            .field("sessions", &self.inner.registry.len())
            .finish()
    }
}

/// Yields the channels whose handshake completed and whose client the policy admitted.
#[derive(Debug)]
pub struct Listener {
    rx: mpsc::Receiver<Channel>,
}

impl Listener {
    /// The next established channel; `None` once every [`Server`] clone is gone.
    pub async fn accept(&mut self) -> Option<Channel> {
        self.rx.recv().await
    }
}

impl Server {
    /// A server with this identity, admission policy, limits and registry (one session per connection).
    pub fn new(
        identity: Identity,
        policy: impl ClientPolicy,
        config: ChannelConfig,
        registry: Registry,
    ) -> (Server, Listener) {
        let (accepted, rx) = mpsc::channel(config.accept_queue.max(1));
        let inner = Inner {
            identity,
            policy: Box::new(policy),
            config,
            registry,
            accepted,
        };
        (
            Server {
                inner: Arc::new(inner),
            },
            Listener { rx },
        )
    }

    /// The server's public key, which clients pin.
    pub fn public_key(&self) -> PublicKey {
        self.inner.identity.public_key()
    }

    /// The registry holding one session per connection.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The configuration.
    pub fn config(&self) -> &ChannelConfig {
        &self.inner.config
    }

    /// An axum router serving the channel at `/`.
    pub fn router(&self) -> Router {
        let server = self.clone();
        Router::new().route(
            "/",
            get(move |upgrade: WebSocketUpgrade| async move { server.upgrade(upgrade) }),
        )
    }

    /// Completes a WebSocket upgrade with the channel's buffer and size limits, then runs the handshake.
    pub fn upgrade(&self, upgrade: WebSocketUpgrade) -> Response {
        let server = self.clone();
        let config = &self.inner.config;
        upgrade
            .read_buffer_size(config.ws_read_buffer)
            .write_buffer_size(config.ws_write_buffer)
            .max_write_buffer_size(config.ws_write_buffer + 2 * FRAME_LIMIT_FOR_WS)
            .max_message_size(FRAME_LIMIT_FOR_WS)
            .max_frame_size(FRAME_LIMIT_FOR_WS)
            .on_upgrade(move |socket| async move { server.accept_socket(socket) })
    }

    /// Runs the handshake on an upgraded socket, as a new session. Returns at once; the channel arrives at
    /// the [`Listener`] if the handshake succeeds. (Buffer sizes are the caller's; see [`Server::upgrade`].)
    pub fn accept_socket(&self, socket: WebSocket) {
        let (sink, stream) = ws::from_axum(socket);
        self.accept_ws(sink, stream);
    }

    fn accept_ws(&self, mut sink: WsSink, stream: WsStream) {
        let inner = self.inner.clone();
        let guard = match inner.registry.create("channel") {
            Ok(guard) => guard,
            Err(e) => {
                let error = ChannelError::from(e);
                tracing::warn!(error = %error, "refusing connection");
                let limit = inner.config.close_timeout;
                // No session to own it: the registry's tracker does, so a shutdown waits for this close
                // too (it ends by itself within `close_timeout`).
                inner
                    .registry
                    .tasks()
                    .spawn(async move { ws::close_after(&mut sink, &error, limit).await });
                return;
            }
        };
        let session = guard.session().clone();
        let spawned = session.spawn(async move {
            let mut sink = sink;
            let mut stream = stream;
            let session = guard.session().clone();
            let config = &inner.config;
            let handshake = handshake(&inner, &session, &mut sink, &mut stream);
            let outcome = match tokio::time::timeout(config.handshake_timeout, handshake).await {
                Ok(outcome) => outcome,
                Err(_elapsed) => Err(ChannelError::HandshakeTimeout(config.handshake_timeout)),
            };
            match outcome {
                Ok(established) => {
                    let channel = match transport::start(
                        &inner.registry,
                        guard,
                        sink,
                        stream,
                        established,
                        config,
                    ) {
                        Ok(channel) => channel,
                        Err(e) => {
                            tracing::debug!(error = %e, "channel could not start");
                            return;
                        }
                    };
                    if let Err(e) = inner.accepted.try_send(channel) {
                        tracing::warn!("accept queue full or listener gone; closing new channel");
                        let channel = match e {
                            mpsc::error::TrySendError::Full(c)
                            | mpsc::error::TrySendError::Closed(c) => c,
                        };
                        channel.abort(close_code::TRY_AGAIN_LATER, "server busy");
                    }
                }
                Err(e) => {
                    tracing::debug!(session = %session.id(), error = %e, "handshake failed");
                    ws::close_after(&mut sink, &e, config.close_timeout).await;
                    guard.fail(FailureReason::error(format!("handshake: {e}")));
                }
            }
        });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "session ended before its handshake started");
        }
    }
}

/// client_hello → server_hello → client_auth → policy → session_established, strictly in that order.
async fn handshake(
    inner: &Inner,
    session: &Session,
    sink: &mut WsSink,
    stream: &mut WsStream,
) -> Result<Established, ChannelError> {
    let state = ExpectClientHello::with_cipher(
        &inner.identity,
        inner.config.max_auth_payload,
        inner.config.cipher,
    );
    let (state, server_hello) = state.handle(&ws::next_frame(stream).await?)?;
    session.touch();
    send(sink, server_hello).await?;
    let authenticated = state.handle(&ws::next_frame(stream).await?)?;
    session.touch();
    let request = AdmissionRequest {
        peer: authenticated.peer(),
        auth_payload: authenticated.auth_payload(),
        channel_binding: authenticated.channel_binding(),
    };
    let welcome = match inner.policy.admit(&request) {
        Admission::Accept { welcome } => welcome,
        Admission::Reject { reason } => return Err(ChannelError::Rejected(reason)),
    };
    let limit = crate::frame::MAX_PLAINTEXT - 1 - crate::frame::SessionEstablished::FIXED_LEN;
    if welcome.len() > limit {
        return Err(ChannelError::TooLarge {
            size: welcome.len(),
            limit,
        });
    }
    let expires_at = inner
        .registry
        .config()
        .max_age
        .and_then(|age| (SystemTime::now() + age).duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    // The session goes live before the client is told so; a server shutting down says so instead.
    if session.activate().is_err() {
        return Err(ChannelError::Session(
            tessera_session::SessionError::RegistryShuttingDown,
        ));
    }
    let (established, frame) =
        authenticated.establish(session.id().to_bytes(), expires_at, &welcome)?;
    send(sink, frame).await?;
    tracing::debug!(session = %session.id(), peer = %established.info().peer, "channel established");
    Ok(established)
}

async fn send(sink: &mut WsSink, frame: Vec<u8>) -> Result<(), ChannelError> {
    sink.send(WsMsg::Binary(frame.into()))
        .await
        .map_err(ChannelError::from)
}

/// A running [`serve`]: its address, and how to stop it.
#[derive(Debug)]
pub struct Serving {
    local_addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    registry: Registry,
}

impl Serving {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, then shuts the sessions down: each open channel gets close 1001 and
    /// `grace` to finish; the rest are cancelled.
    pub async fn shutdown(self, grace: Duration) -> tessera_session::ShutdownReport {
        self.stop.cancel();
        let report = self.registry.shutdown(grace).await;
        let _ = self.task.await;
        report
    }
}

/// Binds `addr` and serves the channel at `/` (e.g. `ws://127.0.0.1:7000/`).
pub async fn serve(addr: SocketAddr, server: &Server) -> std::io::Result<Serving> {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let stop = CancellationToken::new();
    let router = server.router();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    });
    tracing::info!(%local_addr, key = %server.public_key(), "channel server listening");
    Ok(Serving {
        local_addr,
        stop,
        task,
        registry: server.registry().clone(),
    })
}
