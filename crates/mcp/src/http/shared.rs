//! 2026-07-28 requests over a command upstream: every stateless client shares one child process (a process
//! is not a session in 2026-07-28), so the proxy remaps JSON-RPC ids to its own, never colliding, and maps
//! them back on the response — the one place where a message is not forwarded byte for byte (only its id
//! changes; see [`Message::with_id`]).
//!
//! The child belongs to a runtime session of its own (`mcp-stateless-upstream`), whose pending table holds
//! the remapped ids; if the child exits, that session ends and the next request starts a new child. A client
//! that goes away (its stream closed: the 2026 cancel) withdraws the request and the child gets an explicit
//! `notifications/cancelled`, since on stdio a cancel must be said.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::StatusCode;
use axum::response::Response;
use futures_util::StreamExt;
use tessera_session::FailureReason;
use tokio::sync::oneshot;

use super::{Accept, State, error_response, message_response};
use crate::jsonrpc::{Id, Kind, Message, PROXY_ERROR};
use crate::lines::Line;
use crate::metrics;
use crate::outbox::LineTx;
use crate::progress::{self, Routes};
use crate::session::{Direction, McpSession};
use crate::upstream::child::{self, ChildSpec};

/// The shared child and the session that owns it.
pub(crate) struct SharedChild {
    owner: McpSession,
    input: LineTx,
    next_id: AtomicU64,
    /// Progress notifications routed to their request's response stream, by the proxy's own token.
    progress: Routes,
    /// Listens in flight.
    listens: Arc<Listens>,
}

/// 2026-07-28 `subscriptions/listen` requests in flight, by the id the child saw. They stay out of the
/// pending table, whose deadline would end them: a listen is open until its result or its client's cancel
/// (closing the stream). At most as many as the per-session pending limit.
struct Listens {
    max: usize,
    waiting: Mutex<HashMap<String, oneshot::Sender<Message>>>,
}

impl Listens {
    /// Waits for the result of the listen the child knows as `id`; `None` when the table is full.
    fn add(self: &Arc<Self>, id: &Id) -> Option<(ListenGuard, oneshot::Receiver<Message>)> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.len() >= self.max {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let key = id.as_json().to_owned();
        waiting.insert(key.clone(), tx);
        let guard = ListenGuard {
            listens: self.clone(),
            key,
        };
        Some((guard, rx))
    }

    /// Hands a response to its listen; false if it answers no listen.
    fn deliver(&self, response: &Message) -> bool {
        let Some(id) = response.id() else {
            return false;
        };
        let found = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id.as_json());
        match found {
            Some(tx) => {
                let _ = tx.send(response.clone());
                true
            }
            None => false,
        }
    }
}

/// Removes a listen from [`Listens`] when its exchange ends.
struct ListenGuard {
    listens: Arc<Listens>,
    key: String,
}

impl Drop for ListenGuard {
    fn drop(&mut self) {
        self.listens
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// What a request waits on: the pending table (with its deadline), or, for a listen, its result alone.
enum Waiter {
    Pending(tessera_session::Pending<Message>),
    Listen(ListenGuard, oneshot::Receiver<Message>),
}

/// The live shared child, started on first use (or again after the last one exited).
#[allow(clippy::result_large_err)] // a handler's early answer
fn shared_child(state: &Arc<State>, spec: &ChildSpec) -> Result<Arc<SharedChild>, Response> {
    let mut slot = state.shared.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = slot.as_ref().filter(|c| !c.owner.session().is_ended()) {
        return Ok(found.clone());
    }
    let unavailable = |e: &dyn std::fmt::Display| {
        error_response(StatusCode::BAD_GATEWAY, &format!("Bad Gateway: {e}"))
    };
    let (guard, owner) = state
        .sessions
        .create("mcp-stateless-upstream")
        .map_err(|e| unavailable(&e))?;
    let _ = owner.session().activate();
    let (mut child, input, mut output) =
        child::spawn(spec, guard.session()).map_err(|e| unavailable(&e))?;
    let reader = owner.clone();
    let progress = Routes::new(state.sessions.config().pending.per_session);
    let routes = progress.clone();
    let listens = Arc::new(Listens {
        max: state.sessions.config().pending.per_session,
        waiting: Mutex::default(),
    });
    let listened = listens.clone();
    let (rules_state, rules_input) = (state.clone(), input.clone());
    let spawned = guard.session().clone().spawn(async move {
        while let Some(line) = output.next().await {
            let Ok(Line::Frame(bytes)) = line else { continue };
            let Ok(message) = Message::parse(bytes) else {
                metrics::malformed(Direction::ServerToClient);
                continue;
            };
            match message.kind() {
                Kind::Response { .. } => {
                    if listened.deliver(&message) {
                        continue;
                    }
                    if reader.correlate_response(Direction::ServerToClient, &message).is_none() {
                        tracing::debug!(id = ?message.id(), "late or unknown response from the shared child dropped");
                    }
                }
                // Progress finds its request by the proxy's token; stdio gives a log message or a listen
                // notification nothing to route by (see docs/mcp.md).
                _ => {
                    if let Some(back) = super::intercept::server(&rules_state, &reader, &message) {
                        if let Some(error) = back {
                            rules_input.send(&error).await;
                        }
                        continue;
                    }
                    if let Err(unrouted) = routes.deliver(message) {
                        tracing::debug!(method = ?unrouted.method(), "shared child message not routed");
                    }
                }
            }
        }
        tracing::info!("the shared stateless child closed its stdout");
        reader.session().fail(FailureReason::error("the upstream server exited"));
        drop(guard);
    });
    if let Err(e) = spawned {
        return Err(unavailable(&e));
    }
    // At shutdown, the shared child ends as soon as its requests in flight are answered.
    let (closing, idle) = (owner.session().clone(), owner.clone());
    let _ = owner.session().spawn(async move {
        closing.shutdown_requested().await;
        idle.wait_idle().await;
        closing.close();
    });
    let ended = owner.session().clone();
    state.tracker.spawn(async move {
        tokio::select! {
            _ = ended.ended() => { let _ = child.shutdown().await; }
            _ = child.wait() => { ended.fail(FailureReason::error("the upstream server exited")); }
        }
    });
    let shared = Arc::new(SharedChild {
        owner,
        input,
        next_id: AtomicU64::new(1),
        progress,
        listens,
    });
    *slot = Some(shared.clone());
    Ok(shared)
}

/// Withdraws a remapped request whose client went away, and tells the child.
struct CancelOnDrop {
    shared: Arc<SharedChild>,
    upstream_id: Option<Id>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.upstream_id.take() {
            // The cancel is queued before the entry goes, so whoever sees the request gone also finds the
            // cancel ahead of anything it sends next.
            let _ = self
                .shared
                .input
                .try_send(&Message::cancelled(&id, "the client closed its stream"));
            self.shared.owner.forget(Direction::ClientToServer, &id);
        }
    }
}

/// A stateless message for the shared child. `group` is the client's observability session.
pub(crate) async fn post(
    state: &Arc<State>,
    spec: &ChildSpec,
    group: &McpSession,
    message: Message,
    accept: Accept,
) -> Response {
    let shared = match shared_child(state, spec) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let meta = group.observe(&message);
    metrics::frame(Direction::ClientToServer);
    if let Some(tape) = &state.tape {
        tape.frame(&meta, Direction::ClientToServer, &message, None);
    }
    let Some(original) = message.id().filter(|_| message.is_request()).cloned() else {
        // 2026-07-28 defines no client notification over HTTP but `notifications/cancelled`, whose request
        // id the client cannot know after remapping: accepted and dropped.
        return axum::response::IntoResponse::into_response(StatusCode::ACCEPTED);
    };
    let upstream_id = Id::number(
        i64::try_from(shared.next_id.fetch_add(1, Ordering::Relaxed)).unwrap_or(i64::MAX),
    );
    let Some(mut remapped) = message.with_id(&upstream_id) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "Bad Request: the request could not be re-identified",
        );
    };
    // A progress token is the client's choice and may collide with another client's: the child sees a
    // token of the proxy's, and the request's SSE response carries its progress with the client's token.
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let mut guards = Vec::new();
    if let Some(client_token) = progress::token(&message).filter(|_| accept.sse) {
        let ours = format!("\"tessera-progress-{}\"", upstream_id.as_json());
        if let Some(rewritten) = progress::with_token(&remapped, &ours)
            && let Some(guard) = shared.progress.add(
                &progress::progress_key(&ours),
                Some(client_token),
                tx.clone(),
            )
        {
            remapped = rewritten;
            guards.push(guard);
        }
    }
    let listen = message.method() == Some("subscriptions/listen") && accept.sse;
    if listen {
        // A listen's notifications name it by the id the child saw: routed back under the client's id, on
        // the stream that stays open until the listen ends (its result) or the client closes it (the cancel).
        let key = progress::subscription_key(upstream_id.as_json());
        if let Some(guard) = shared
            .progress
            .add(&key, Some(original.as_json()), tx.clone())
        {
            guards.push(guard);
        }
    }
    if progress::wants_logs(&message) && accept.sse {
        // Its log messages, while it is the only request in flight that asked for them.
        let key = progress::log_key(upstream_id.as_json());
        if let Some(guard) = shared.progress.add(&key, None, tx.clone()) {
            guards.push(guard);
        }
    }
    drop(tx);
    let routed = (!guards.is_empty()).then_some((guards, rx));
    // A listen has no deadline (it stays open until its result); anything else is tracked.
    let tracked = if listen {
        shared
            .listens
            .add(&upstream_id)
            .map(|(guard, rx)| Waiter::Listen(guard, rx))
            .ok_or_else(|| "too many listens in flight".to_owned())
    } else {
        shared
            .owner
            .track_request(Direction::ClientToServer, &remapped)
            .map(Waiter::Pending)
            .map_err(|refusal| refusal.error.to_string())
    };
    let pending = match tracked {
        Ok(p) => p,
        Err(text) => {
            let reply = Message::error_reply(Some(&original), PROXY_ERROR, &text);
            return message_response(&reply, accept, None);
        }
    };
    let mut cancel = CancelOnDrop {
        shared: shared.clone(),
        upstream_id: Some(upstream_id.clone()),
    };
    if !shared.input.send(&remapped).await {
        return error_response(
            StatusCode::BAD_GATEWAY,
            "Bad Gateway: the upstream server is gone",
        );
    }
    if let Some((guards, notes)) = routed {
        let (state, group) = (state.clone(), group.clone());
        let outcome = async move {
            let response = answer(&shared, &mut cancel, pending, &upstream_id, &original).await;
            record(&state, &group, &response);
            Some(response)
        };
        return super::streamed::response(notes, outcome, guards, None);
    }
    let response = answer(&shared, &mut cancel, pending, &upstream_id, &original).await;
    record(state, group, &response);
    let mut http = message_response(&response, accept, None);
    *http.status_mut() = status_of(&response);
    http
}

/// The HTTP status of a 2026-07-28 answer, as a Streamable HTTP server gives it (a stdio server cannot):
/// `-32601` → 404; `-32602`, `-32020` HeaderMismatch, `-32021` MissingRequiredClientCapability and `-32022`
/// UnsupportedProtocolVersion → 400; anything else → 200.
pub(crate) fn status_of(response: &Message) -> StatusCode {
    match response.kind() {
        Kind::Response {
            error_code: Some(-32601),
            ..
        } => StatusCode::NOT_FOUND,
        Kind::Response {
            error_code: Some(-32602 | -32020 | -32021 | -32022),
            ..
        } => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

/// The child's answer to a remapped request, under the client's id (or the proxy's error).
async fn answer(
    shared: &SharedChild,
    cancel: &mut CancelOnDrop,
    pending: Waiter,
    upstream_id: &Id,
    original: &Id,
) -> Message {
    let outcome = match pending {
        Waiter::Pending(pending) => McpSession::outcome(pending, upstream_id).await,
        Waiter::Listen(_guard, result) => {
            let ended = shared.owner.session().token();
            tokio::select! {
                result = result => result.map_err(|_| None),
                () = ended.cancelled() => Err(None),
            }
        }
    };
    let response = match outcome {
        Ok(response) => {
            cancel.upstream_id = None;
            response.with_id(original)
        }
        Err(Some(expired)) => {
            cancel.upstream_id = None;
            metrics::expired();
            shared.input.send(&expired.cancel).await;
            Some(Message::error_reply(
                Some(original),
                PROXY_ERROR,
                "request timed out",
            ))
        }
        Err(None) => None,
    };
    response.unwrap_or_else(|| {
        Message::error_reply(
            Some(original),
            PROXY_ERROR,
            "the upstream server ended before answering",
        )
    })
}

/// Counts and records a response going back to a stateless client.
fn record(state: &State, group: &McpSession, response: &Message) {
    let meta = group.observe(response);
    metrics::frame(Direction::ServerToClient);
    if let Some(tape) = &state.tape {
        tape.frame(&meta, Direction::ServerToClient, response, None);
    }
}
