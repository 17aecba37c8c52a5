//! The Streamable HTTP front: many concurrent clients on one endpoint (`/mcp`), each session mapped to its
//! own upstream session — a child process per session with a command upstream ([`command`]), or the remote
//! server's own session with a URL upstream ([`crate::upstream::http`]).
//!
//! Handlers are thin: [`post`], [`get`] and [`delete`] check the request (Origin, `MCP-Protocol-Version`,
//! session id) and hand it to the session's upstream link. The proxy mints its own `Mcp-Session-Id` (the
//! runtime's unguessable id); the upstream's id never reaches the client.
//!
//! Every session lives in the runtime registry and in the map here; a task of the session removes it from
//! the map when the session ends, however it ends (DELETE, idle timeout, upstream exit, shutdown).

pub mod batch;
pub mod command;
pub mod delete;
pub mod get;
mod intercept;
pub mod legacy_sse;
mod legacy_url;
pub mod post;
mod recorded;
mod resumable;
pub mod shared;
pub mod sse;
pub mod stateless;
mod streamed;
pub mod version;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use std::future::IntoFuture;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tessera_session::{SessionGuard, SessionId, ShutdownReport, TaskTracker};
use tokio::sync::mpsc;

use crate::error::McpError;
use crate::jsonrpc::{Message, PROXY_ERROR};
use crate::outbox::LineTx;
use crate::session::{McpSession, Sessions};
use crate::tape::Tape;
use crate::upstream::child::ChildSpec;
use crate::upstream::http::HttpUpstream;

/// `Mcp-Session-Id`.
pub static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// `MCP-Protocol-Version`.
pub static MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Last-Event-ID`.
pub static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Where the proxy's sessions go.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// A remote Streamable HTTP endpoint (plain HTTP, e.g. on loopback).
    Url(String),
    /// A command started once per session, spoken to over stdio.
    Command(ChildSpec),
}

/// Configuration of the HTTP front.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The upstream.
    pub upstream: Upstream,
    /// Origins accepted besides `http(s)://localhost`, `127.0.0.1` and `[::1]` (any port).
    pub allowed_origins: Vec<String>,
    /// The largest POST body, and the largest message read back (default 4 MiB).
    pub max_body: usize,
    /// Most server-initiated messages queued for a session's GET stream (default 256).
    pub stream_queue: usize,
    /// The `retry` (ms) sent in the priming event that opens a command upstream's GET stream for a
    /// 2025-11-25 (or later) session: how long a client waits before it reconnects (default 3000).
    pub sse_retry_ms: u64,
    /// Interception rules run over every client message, and over a command upstream's messages.
    pub rules: crate::rules::RuleSet,
    /// How long a POST response stream of a 2025-11-25 session with a command upstream waits for a client
    /// that lost it to resume (GET with `Last-Event-ID`) before its request is withdrawn (default 10 s;
    /// 0 = no resumption: a dropped stream withdraws the request at once).
    pub resume_window_ms: u64,
    /// How long a message of the proxy's own to a URL upstream may take — `notifications/cancelled`, a
    /// blocked server request's error, DELETE (default 5000 ms): a hung upstream must not hold a DELETE or
    /// shutdown.
    pub control_timeout_ms: u64,
}

impl HttpConfig {
    /// Defaults for this upstream.
    pub fn new(upstream: Upstream) -> Self {
        HttpConfig {
            upstream,
            allowed_origins: Vec::new(),
            max_body: 4 * 1024 * 1024,
            stream_queue: 256,
            sse_retry_ms: 3000,
            rules: crate::rules::RuleSet::none(),
            resume_window_ms: 10_000,
            control_timeout_ms: 5000,
        }
    }

    pub(crate) fn control_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.control_timeout_ms)
    }
}

/// A session's link to its upstream.
pub(crate) enum Link {
    /// The remote server's session, once its `Mcp-Session-Id` is known.
    Url {
        upstream_id: OnceLock<HeaderValue>,
        /// The client's stream, for an old HTTP+SSE (2024-11-05) client ([`legacy_url`]).
        legacy: Option<mpsc::Sender<Message>>,
    },
    /// The session's own child process.
    Child {
        input: LineTx,
        /// Server-initiated messages for the GET stream; taken while a stream is open.
        stream: Mutex<Option<mpsc::Receiver<Message>>>,
        /// The way into the GET stream (the old HTTP+SSE transport sends responses there too).
        to_stream: mpsc::Sender<Message>,
        /// The last events sent on GET streams (id, encoded event), for `Last-Event-ID` resumption.
        history: Mutex<get::History>,
        /// Progress notifications routed to their request's response stream.
        progress: crate::progress::Routes,
        /// POST response streams a client may resume (2025-11-25).
        streams: Arc<resumable::Streams>,
    },
}

/// One HTTP session.
pub(crate) struct HttpSession {
    pub(crate) mcp: McpSession,
    pub(crate) link: Link,
}

pub(crate) struct State {
    pub(crate) sessions: Sessions,
    pub(crate) config: HttpConfig,
    pub(crate) map: Mutex<HashMap<SessionId, Arc<HttpSession>>>,
    pub(crate) upstream: Option<HttpUpstream>,
    pub(crate) tracker: TaskTracker,
    pub(crate) tape: Option<Tape>,
    /// Observability groups of stateless (2026-07-28) clients.
    pub(crate) groups: Mutex<HashMap<String, McpSession>>,
    /// The child shared by stateless clients (command upstream).
    pub(crate) shared: Mutex<Option<Arc<shared::SharedChild>>>,
    /// The senders of old-transport sessions over a URL upstream (removed when their session ends).
    pub(crate) legacy_outboxes: Mutex<HashMap<SessionId, Arc<legacy_url::Outbox>>>,
}

/// The HTTP proxy: build it, mount [`HttpProxy::router`], and call [`HttpProxy::shutdown`] at the end.
#[derive(Clone)]
pub struct HttpProxy {
    state: Arc<State>,
}

impl std::fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProxy")
            .field("sessions", &self.state.sessions.registry().len())
            .finish()
    }
}

impl HttpProxy {
    /// A proxy with this configuration over these sessions. Must be called within a Tokio runtime.
    pub fn new(
        config: HttpConfig,
        sessions: Sessions,
        tape: Option<Tape>,
    ) -> Result<Self, McpError> {
        let upstream = match &config.upstream {
            Upstream::Url(url) => Some(HttpUpstream::new(url, config.max_body)?),
            Upstream::Command(_) => None,
        };
        Ok(HttpProxy {
            state: Arc::new(State {
                sessions,
                config,
                map: Mutex::new(HashMap::new()),
                upstream,
                tracker: TaskTracker::new(),
                tape,
                groups: Mutex::new(HashMap::new()),
                shared: Mutex::new(None),
                legacy_outboxes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The routes: POST, GET and DELETE on `/mcp`, and the old transport's `GET /sse` and `POST /message`.
    pub fn router(&self) -> Router {
        use axum::routing::post as route_post;
        Router::new()
            .route(
                "/mcp",
                route_post(post::post).get(get::get).delete(delete::delete),
            )
            .route("/sse", axum::routing::get(legacy_sse::open))
            .route("/message", route_post(legacy_sse::message))
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                recorded::record,
            ))
            .layer(axum::extract::DefaultBodyLimit::max(
                self.state.config.max_body,
            ))
            .with_state(self.state.clone())
    }

    /// The sessions (counts, pending requests).
    pub fn sessions(&self) -> &Sessions {
        &self.state.sessions
    }

    /// Sessions in the HTTP map (equal to the registry's count once every end has been processed).
    pub fn mapped_sessions(&self) -> usize {
        self.state
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Serves the proxy's routes and `extra` (e.g. `/health`, `/metrics`) on `listener` until `stop`
    /// completes; then stops accepting, lets sessions finish within `grace` and stops child servers.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        extra: Router,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
        grace: std::time::Duration,
    ) -> std::io::Result<ShutdownReport> {
        let accepting = tokio_util::sync::CancellationToken::new();
        use axum::serve::ListenerExt;
        // Replies are small: send them at once (no Nagle).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = axum::serve(listener, self.router().merge(extra))
            .with_graceful_shutdown(accepting.clone().cancelled_owned())
            .into_future();
        let server = tokio::spawn(server);
        stop.await;
        accepting.cancel();
        let report = self.shutdown(grace).await;
        server.await.map_err(std::io::Error::other)??;
        Ok(report)
    }

    /// Graceful shutdown: sessions get `grace` to finish, then are cancelled; child servers are stopped
    /// (stdin closed, SIGTERM, SIGKILL) and waited for.
    pub async fn shutdown(&self, grace: std::time::Duration) -> ShutdownReport {
        let report = self.state.sessions.registry().shutdown(grace).await;
        self.state.tracker.close();
        self.state.tracker.wait().await;
        report
    }
}

/// Removes a session from the map when dropped — held by a task of the session, so it runs on every end.
struct Unmap {
    state: Weak<State>,
    id: SessionId,
    mcp: McpSession,
}

impl Drop for Unmap {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            state
                .map
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.id);
        }
        self.mcp.notify_change();
    }
}

impl State {
    /// Puts a session in the map, tied to the session's life.
    pub(crate) fn register(
        self: &Arc<Self>,
        guard: SessionGuard<Message>,
        session: Arc<HttpSession>,
    ) -> Result<(), McpError> {
        let id = session.mcp.id();
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, session.clone());
        let unmap = Unmap {
            state: Arc::downgrade(self),
            id,
            mcp: session.mcp.clone(),
        };
        let mcp = session.mcp.clone();
        let spawned = guard.session().clone().spawn(async move {
            let _unmap = unmap;
            // At shutdown, a session ends as soon as its in-flight requests are answered.
            guard.shutdown_requested().await;
            mcp.wait_idle().await;
            guard.close();
        });
        if let Err(e) = spawned {
            self.map
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            return Err(e.into());
        }
        Ok(())
    }

    /// The live session named by the request's `Mcp-Session-Id`.
    #[allow(clippy::result_large_err)] // a handler's early answer
    pub(crate) fn find(&self, headers: &HeaderMap) -> Result<Arc<HttpSession>, Response> {
        let Some(value) = headers.get(&MCP_SESSION_ID) else {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                "Bad Request: Mcp-Session-Id header is required",
            ));
        };
        let id = value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<SessionId>().ok());
        let found = id.and_then(|id| {
            self.map
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .cloned()
        });
        match found {
            Some(s) if !s.mcp.session().is_ended() => Ok(s),
            _ => Err(error_response_code(
                StatusCode::NOT_FOUND,
                -32001,
                "Session not found",
            )),
        }
    }
}

/// Rejects a present `Origin` that is not local or explicitly allowed (DNS rebinding): 403.
#[allow(clippy::result_large_err)] // a handler's early answer
pub(crate) fn check_origin(headers: &HeaderMap, config: &HttpConfig) -> Result<(), Response> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if config.allowed_origins.iter().any(|o| o == origin) {
        return Ok(());
    }
    let host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .map(|rest| rest.split('/').next().unwrap_or(""))
        .unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    if matches!(host, "localhost" | "127.0.0.1" | "::1") {
        Ok(())
    } else {
        Err(error_response(
            StatusCode::FORBIDDEN,
            "Forbidden: Origin not allowed",
        ))
    }
}

/// An HTTP error whose body is a JSON-RPC error with a null id.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    error_response_code(status, PROXY_ERROR, message)
}

pub(crate) fn error_response_code(status: StatusCode, code: i32, message: &str) -> Response {
    json_response(status, &Message::error_reply(None, code, message), None)
}

/// A JSON body, with the proxy's session id when given.
pub(crate) fn json_response(
    status: StatusCode,
    message: &Message,
    session: Option<SessionId>,
) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(message.raw().clone()),
    )
        .into_response();
    if let Some(id) = session {
        set_session_header(&mut response, id);
    }
    response
}

pub(crate) fn set_session_header(response: &mut Response, id: SessionId) {
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(MCP_SESSION_ID.clone(), v);
    }
}

/// What the client accepts for a request's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accept {
    pub(crate) json: bool,
    pub(crate) sse: bool,
}

impl Accept {
    pub(crate) fn from_headers(headers: &HeaderMap) -> Accept {
        let mut accept = Accept {
            json: false,
            sse: false,
        };
        for value in headers.get_all(header::ACCEPT) {
            let v = value.to_str().unwrap_or("");
            accept.json |= v.contains("application/json") || v.contains("*/*");
            accept.sse |= v.contains("text/event-stream") || v.contains("*/*");
        }
        accept
    }
}

/// The answer to a POST whose request its client cancelled: an SSE stream that ends without a response
/// (the spec: no response to a cancelled request), or, for a client that takes only JSON, a `-32000`
/// error for it, which a client that cancelled ignores.
pub(crate) fn cancelled_response(accept: Accept, id: &crate::jsonrpc::Id) -> Response {
    if accept.sse {
        return IntoResponse::into_response((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
        ));
    }
    json_response(
        StatusCode::OK,
        &Message::error_reply(
            Some(id),
            crate::jsonrpc::PROXY_ERROR,
            "the request was cancelled",
        ),
        None,
    )
}

/// A response body for one message: JSON when the client takes it, else a one-event SSE stream.
pub(crate) fn message_response(
    message: &Message,
    accept: Accept,
    session: Option<SessionId>,
) -> Response {
    if accept.json || !accept.sse {
        return json_response(StatusCode::OK, message, session);
    }
    let event: Bytes = sse::message_event(&message.line_safe(), None);
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from(event),
    )
        .into_response();
    if let Some(id) = session {
        set_session_header(&mut response, id);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_rules() {
        let config = HttpConfig {
            allowed_origins: vec!["https://app.example".into()],
            ..HttpConfig::new(Upstream::Url("http://127.0.0.1:1/mcp".into()))
        };
        let check = |origin: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            check_origin(&h, &config).is_ok()
        };
        assert!(check(None));
        assert!(check(Some("http://localhost:3000")));
        assert!(check(Some("http://127.0.0.1")));
        assert!(check(Some("http://[::1]:8080")));
        assert!(check(Some("https://app.example")));
        assert!(!check(Some("http://evil.example")));
        assert!(!check(Some("http://localhost.evil.example")));
        assert!(!check(Some("null")));
    }
}
