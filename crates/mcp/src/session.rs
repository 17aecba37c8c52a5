//! MCP sessions on the session runtime: correlation, limits, deadlines, negotiated version, frame metadata.
//!
//! Seed 001, point by point:
//! * pending requests live in the runtime session's own table, keyed by (session, direction, id), with the
//!   method stored; ending the session drains them (no leak), and a response takes its entry in one atomic
//!   step (no check-then-remove race);
//! * a response is recognized by its request: the stored method says it answers `initialize` or
//!   `server/discover`, and only then is the result read for the negotiated version and capabilities;
//! * one state enum, the runtime's [`tessera_session::SessionState`]: the `initialize` result moves the
//!   session from Initializing to Active;
//! * 1000 pending per session and 10,000 in all (configurable): a request past either gets a JSON-RPC error
//!   back to its sender ([`Refusal`]), and is not forwarded;
//! * a request past its deadline: the sender gets a JSON-RPC error and the receiver `notifications/cancelled`
//!   ([`Expired`]);
//! * every frame is counted against the session the transport says it came on (never guessed), and its
//!   [`FrameMeta`] carries `frame_count`, `session_duration_ms` and tags that are really set.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tessera_session::{
    LimitScope, Pending, PendingError, PendingLimits, PendingTicket, Registry, RegistryConfig,
    RequestId, Session, SessionError, SessionGuard, SessionId, SessionState,
};
use tokio::sync::Notify;

use crate::jsonrpc::{INVALID_REQUEST, Id, Kind, Message, PROXY_ERROR};
use crate::metrics;

/// Which way a frame travels through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the server.
    ClientToServer,
    /// From the server to the client.
    ServerToClient,
}

impl Direction {
    /// The other way.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }

    /// A short label: `c2s` or `s2c`.
    pub fn label(self) -> &'static str {
        match self {
            Direction::ClientToServer => "c2s",
            Direction::ServerToClient => "s2c",
        }
    }
}

/// Limits, deadlines and tag thresholds of the proxy's sessions.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// The service name for metrics.
    pub name: &'static str,
    /// Pending-request limits (1000 per session, 10,000 in all) and the request deadline (default 60 s).
    pub pending: PendingLimits,
    /// Most live sessions (default 10,000).
    pub max_sessions: usize,
    /// A session idle this long is ended (default 1 h).
    pub idle_timeout: Duration,
    /// Tag `long-running` from this session age on (default 10 min).
    pub long_running_after: Duration,
    /// Tag `high-volume` from this many frames on (default 1000).
    pub high_volume_frames: u64,
    /// Tag `error-prone` when at least this share of at least 10 responses are errors (default 0.1).
    pub error_prone_ratio: f64,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            name: "mcp",
            pending: PendingLimits {
                per_session: 1000,
                global: 10_000,
                deadline: Duration::from_secs(60),
            },
            max_sessions: 10_000,
            idle_timeout: Duration::from_secs(3600),
            long_running_after: Duration::from_secs(600),
            high_volume_frames: 1000,
            error_prone_ratio: 0.1,
        }
    }
}

/// What the session learned from the `initialize` or `server/discover` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The request that produced it.
    pub via: &'static str,
    /// The protocol version agreed (`initialize`), if any.
    pub protocol_version: Option<String>,
    /// The versions the server offers (`server/discover`).
    pub supported_versions: Vec<String>,
    /// The server's capabilities, as raw JSON.
    pub capabilities: Option<String>,
}

/// Withdraws a client request when dropped; see [`McpSession::withdraw_on_drop`].
#[derive(Debug)]
pub struct Withdraw {
    mcp: McpSession,
    /// The request this guard withdraws: exactly it, never a later request that reused its id.
    ticket: Option<PendingTicket>,
}

impl Withdraw {
    /// The request was answered: nothing to withdraw.
    pub fn disarm(&mut self) {
        self.ticket = None;
    }

    /// Withdraws the request now; true if it was still pending, i.e. the caller now owes its answer (a
    /// response racing it is then dropped as late).
    pub fn claim(&mut self) -> bool {
        self.ticket
            .take()
            .is_some_and(|ticket| self.mcp.withdraw(&ticket))
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.mcp.withdraw(&ticket);
        }
    }
}

/// A request the proxy refused to forward, and the error reply for its sender.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The runtime's reason.
    pub error: SessionError,
    /// The JSON-RPC error to send back.
    pub reply: Message,
}

/// A request whose deadline passed: an error for its sender and a cancellation for its receiver.
#[derive(Debug, Clone)]
pub struct Expired {
    /// The JSON-RPC error for the request's sender.
    pub reply: Message,
    /// `notifications/cancelled` for the request's receiver.
    pub cancel: Message,
}

/// A response matched to its request.
#[derive(Debug, Clone)]
pub struct Correlated {
    /// The request's method.
    pub method: String,
    /// The round-trip time.
    pub rtt: Duration,
}

struct Stats {
    frames: AtomicU64,
    responses: AtomicU64,
    errors: AtomicU64,
    authenticated: AtomicBool,
    negotiated: Mutex<Option<Negotiated>>,
    /// Tags added by interception rules (at most [`MAX_LABELS`]).
    labels: Mutex<Vec<Arc<str>>>,
}

/// Most rule-added tags one session keeps.
pub const MAX_LABELS: usize = 32;

/// The proxy's sessions: one runtime [`Registry`] whose pending requests await [`Message`]s.
#[derive(Clone, Debug)]
pub struct Sessions {
    registry: Registry<Message>,
    config: Arc<McpConfig>,
    changed: Arc<Notify>,
    metrics: metrics::Handles,
}

impl Sessions {
    /// A registry with this configuration. Must be called within a Tokio runtime.
    pub fn new(config: McpConfig) -> Self {
        let mut rc = RegistryConfig::new(config.name);
        rc.pending = config.pending;
        rc.max_sessions = config.max_sessions;
        rc.idle_timeout = config.idle_timeout;
        rc.max_age = None;
        Sessions {
            registry: Registry::new(rc),
            config: Arc::new(config),
            changed: Arc::new(Notify::new()),
            metrics: metrics::Handles::new(),
        }
    }

    /// Starts a session of this kind; the guard ends it when dropped.
    pub fn create(
        &self,
        kind: &'static str,
    ) -> Result<(SessionGuard<Message>, McpSession), SessionError> {
        let guard = self.registry.create(kind)?;
        let session = McpSession {
            session: guard.session().clone(),
            config: self.config.clone(),
            changed: self.changed.clone(),
            metrics: self.metrics.clone(),
            stats: Arc::new(Stats {
                frames: AtomicU64::new(0),
                responses: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                authenticated: AtomicBool::new(false),
                negotiated: Mutex::new(None),
                labels: Mutex::new(Vec::new()),
            }),
        };
        Ok((guard, session))
    }

    /// The runtime registry (counts, shutdown).
    pub fn registry(&self) -> &Registry<Message> {
        &self.registry
    }

    /// The configuration.
    pub fn config(&self) -> &McpConfig {
        &self.config
    }

    /// Completes once no request is pending in any session (for orderly shutdown and tests).
    pub async fn wait_no_pending(&self) {
        self.wait_pending(|n| n == 0).await;
    }

    /// Completes once the number of pending requests satisfies `done`.
    pub async fn wait_pending(&self, done: impl Fn(usize) -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self.registry.pending_len()) {
                return;
            }
            notified.await;
        }
    }
}

/// One MCP session: the runtime session plus what MCP adds to it. Cheap to clone.
#[derive(Clone)]
pub struct McpSession {
    session: Session<Message>,
    config: Arc<McpConfig>,
    changed: Arc<Notify>,
    metrics: metrics::Handles,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for McpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpSession")
            .field("id", &self.session.id())
            .field("frames", &self.stats.frames.load(Ordering::Relaxed))
            .finish()
    }
}

/// The pending-table key: who sent the request, and its raw id. Client and server ids live in separate
/// spaces, so the server's request 1 never collides with the client's request 1.
fn key(sender: Direction, id: &Id) -> RequestId {
    let prefix = match sender {
        Direction::ClientToServer => 'c',
        Direction::ServerToClient => 's',
    };
    let mut text = String::with_capacity(id.as_json().len() + 1);
    text.push(prefix);
    text.push_str(id.as_json());
    RequestId::from(text)
}

#[derive(Deserialize)]
struct InitializeResult<'a> {
    #[serde(rename = "protocolVersion")]
    protocol_version: Option<String>,
    #[serde(borrow)]
    capabilities: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct DiscoverResult<'a> {
    #[serde(rename = "supportedVersions", default)]
    supported_versions: Vec<String>,
    #[serde(borrow)]
    capabilities: Option<&'a RawValue>,
}

impl McpSession {
    /// The runtime session.
    pub fn session(&self) -> &Session<Message> {
        &self.session
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.session.id()
    }

    /// Counts a frame passing through the session (and in the frame metric), without building its
    /// metadata: for a path that records nothing.
    pub fn count(&self, message: &Message, direction: Direction) -> u64 {
        self.metrics.frame(direction);
        let frame_count = self.stats.frames.fetch_add(1, Ordering::Relaxed) + 1;
        if let Kind::Response { error_code, .. } = message.kind() {
            self.stats.responses.fetch_add(1, Ordering::Relaxed);
            if error_code.is_some() {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.session.touch();
        frame_count
    }

    /// Counts a frame passing through the session and returns its metadata (the caller counts the frame
    /// metric).
    pub fn observe(&self, message: &Message) -> FrameMeta {
        let frame_count = self.stats.frames.fetch_add(1, Ordering::Relaxed) + 1;
        if let Kind::Response { error_code, .. } = message.kind() {
            self.stats.responses.fetch_add(1, Ordering::Relaxed);
            if error_code.is_some() {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.session.touch();
        let age = self.session.age();
        FrameMeta {
            session: self.session.id(),
            frame_count,
            session_duration_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            tags: self.tags_at(age, frame_count),
            labels: self.labels(),
        }
    }

    /// The per-message metric handles.
    pub(crate) fn metrics(&self) -> &metrics::Handles {
        &self.metrics
    }

    /// How long a request may wait for its response.
    pub fn deadline(&self) -> Duration {
        self.config.pending.deadline
    }

    /// Frames that passed through the session so far.
    pub fn frames(&self) -> u64 {
        self.stats.frames.load(Ordering::Relaxed)
    }

    /// The session's tags now.
    pub fn tags(&self) -> Tags {
        self.tags_at(
            self.session.age(),
            self.stats.frames.load(Ordering::Relaxed),
        )
    }

    fn tags_at(&self, age: Duration, frames: u64) -> Tags {
        let mut tags = Tags::default();
        if age >= self.config.long_running_after {
            tags = tags | Tags::LONG_RUNNING;
        }
        if frames >= self.config.high_volume_frames {
            tags = tags | Tags::HIGH_VOLUME;
        }
        if self.stats.authenticated.load(Ordering::Relaxed) {
            tags = tags | Tags::AUTHENTICATED;
        }
        let responses = self.stats.responses.load(Ordering::Relaxed);
        let errors = self.stats.errors.load(Ordering::Relaxed);
        if responses >= 10 && errors as f64 >= responses as f64 * self.config.error_prone_ratio {
            tags = tags | Tags::ERROR_PRONE;
        }
        tags
    }

    /// Marks the session as authenticated (the transport saw credentials).
    pub fn set_authenticated(&self) {
        self.stats.authenticated.store(true, Ordering::Relaxed);
    }

    /// Records a request from `sender` before it is forwarded. On success the returned waiter resolves with
    /// the response, [`PendingError::Timeout`] at the deadline, or the session's end; on refusal, send
    /// [`Refusal::reply`] back to the sender and do not forward the request.
    pub fn track_request(
        &self,
        sender: Direction,
        message: &Message,
    ) -> Result<Pending<Message>, Refusal> {
        self.track_request_as(sender, message, None)
    }

    /// [`McpSession::track_request`] under a key the transport chose (`key`), for exchanges that already
    /// say which request they belong to (a stateless HTTP POST): clients of one group may reuse ids.
    pub fn track_request_as(
        &self,
        sender: Direction,
        message: &Message,
        key_id: Option<&Id>,
    ) -> Result<Pending<Message>, Refusal> {
        let Kind::Request { id, method } = message.kind() else {
            return Err(Refusal {
                error: SessionError::NotPending(String::new()),
                reply: Message::error_reply(None, INVALID_REQUEST, "not a request"),
            });
        };
        let kind = metrics::method_label(method);
        let inserted = self
            .session
            .insert_pending(key(sender, key_id.unwrap_or(id)), kind);
        if inserted.is_ok() {
            self.changed.notify_waiters();
        }
        inserted.map_err(|error| {
            let (code, text, data) = match &error {
                SessionError::TooManyRequests { scope, limit } => (
                    PROXY_ERROR,
                    format!("too many pending requests: the {scope} limit of {limit} is reached"),
                    Some(serde_json::json!({
                        "limit": limit,
                        "scope": match scope { LimitScope::Session => "session", LimitScope::Global => "global" },
                    })),
                ),
                SessionError::DuplicateRequest(_) => {
                    (INVALID_REQUEST, format!("a request with id {id} is already pending"), None)
                }
                other => (PROXY_ERROR, other.to_string(), None),
            };
            metrics::refused(&error);
            Refusal {
                reply: Message::error_reply_with_data(Some(id), code, &text, data.as_ref()),
                error,
            }
        })
    }

    /// Matches a response travelling in `direction` to the request it answers, in one atomic step, and
    /// delivers it to the request's waiter. `None` if nothing is pending under its id (never asked, answered
    /// already, cancelled, or timed out): such a response must not be forwarded.
    pub fn correlate_response(
        &self,
        direction: Direction,
        message: &Message,
    ) -> Option<Correlated> {
        self.correlate_response_as(direction, message, None)
    }

    /// [`McpSession::correlate_response`] for a request tracked under `key_id`.
    pub fn correlate_response_as(
        &self,
        direction: Direction,
        message: &Message,
        key_id: Option<&Id>,
    ) -> Option<Correlated> {
        let id = key_id.or(message.id())?;
        let taken = self.session.take_pending(&key(direction.reverse(), id))?;
        let info = taken.info().clone();
        let rtt = info.elapsed();
        self.metrics
            .request_finished(&info.kind, rtt, message.is_error());
        if direction == Direction::ServerToClient && !message.is_error() {
            self.record_negotiation(&info.kind, message);
        }
        taken.resolve(message.clone());
        self.changed.notify_waiters();
        Some(Correlated {
            method: info.kind.into_owned(),
            rtt,
        })
    }

    /// A `notifications/cancelled` from `sender` withdraws its request: the entry goes, so neither a late
    /// response nor the deadline acts on it. Returns the request's id if it was pending.
    pub fn cancelled_by(&self, sender: Direction, message: &Message) -> Option<Id> {
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(rename = "requestId", borrow)]
            request_id: &'a RawValue,
        }
        let params = message.params::<Params<'_>>()?;
        let id = Id::from_raw(params.request_id.get())?;
        let taken = self.session.take_pending(&key(sender, &id))?;
        drop(taken);
        self.changed.notify_waiters();
        Some(id)
    }

    /// Whether `sender`'s request `id` is still waiting for its response.
    pub fn is_pending(&self, sender: Direction, id: &Id) -> bool {
        self.session.has_pending(&key(sender, id))
    }

    /// Withdraws a request whose sender went away (an HTTP client disconnected): nothing stays pending.
    /// Returns true if the request was still pending.
    pub fn forget(&self, sender: Direction, id: &Id) -> bool {
        let was_pending = self.session.take_pending(&key(sender, id)).is_some();
        if was_pending {
            self.changed.notify_waiters();
        }
        was_pending
    }

    /// Withdraws the request `ticket` names if it is still pending (and not a later request that reused
    /// its id); true if it was.
    pub fn withdraw(&self, ticket: &PendingTicket) -> bool {
        let was_pending = self.session.withdraw_pending(ticket).is_some();
        if was_pending {
            self.changed.notify_waiters();
        }
        was_pending
    }

    /// A guard that withdraws the client's request `ticket` names ([`Pending::ticket`]) when dropped,
    /// unless disarmed: held by whatever waits on behalf of a client that can go away (an HTTP exchange).
    pub fn withdraw_on_drop(&self, ticket: PendingTicket) -> Withdraw {
        Withdraw {
            mcp: self.clone(),
            ticket: Some(ticket),
        }
    }

    /// Completes when the session has no pending request.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.session.pending_len() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Wakes [`Sessions::wait_no_pending`] waiters (after something left the pending tables).
    pub(crate) fn notify_change(&self) {
        self.changed.notify_waiters();
    }

    /// Waits for a tracked request's outcome. `Ok` carries the response; `Err(Some(expired))` a deadline
    /// that passed, with the messages to send; `Err(None)` the session's end (nobody is left to tell).
    pub async fn outcome(
        pending: Pending<Message>,
        request: &Id,
    ) -> Result<Message, Option<Expired>> {
        match pending.wait().await {
            Ok(response) => Ok(response),
            Err(PendingError::Timeout(after)) => Err(Some(Expired {
                reply: Message::error_reply(
                    Some(request),
                    PROXY_ERROR,
                    &format!("request timed out after {} ms", after.as_millis()),
                ),
                cancel: Message::cancelled(request, "the proxy's request deadline passed"),
            })),
            Err(PendingError::SessionEnded(_) | PendingError::Abandoned) => Err(None),
        }
    }

    fn record_negotiation(&self, method: &str, message: &Message) {
        let negotiated = match method {
            "initialize" => message
                .result::<InitializeResult<'_>>()
                .map(|r| Negotiated {
                    via: "initialize",
                    protocol_version: r.protocol_version,
                    supported_versions: Vec::new(),
                    capabilities: r.capabilities.map(|c| c.get().to_owned()),
                }),
            "server/discover" => message.result::<DiscoverResult<'_>>().map(|r| Negotiated {
                via: "server/discover",
                protocol_version: None,
                supported_versions: r.supported_versions,
                capabilities: r.capabilities.map(|c| c.get().to_owned()),
            }),
            _ => return,
        };
        let Some(negotiated) = negotiated else {
            tracing::warn!(session = %self.id(), method, "could not read the negotiation result");
            return;
        };
        tracing::debug!(session = %self.id(), ?negotiated, "negotiated");
        *self
            .stats
            .negotiated
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(negotiated);
        if self.session.state() == SessionState::Initializing {
            let _ = self.session.activate();
        }
    }

    /// What the `initialize` or `server/discover` result said, once it has arrived.
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.stats
            .negotiated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

mod tags;
pub use tags::{FrameMeta, Tags};

#[cfg(test)]
mod tests;
