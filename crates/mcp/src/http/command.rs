//! A command upstream: one child process per HTTP session, started with the session and stopped with it
//! (stdin closed, SIGTERM, SIGKILL). A request's response comes back through the session's pending table;
//! messages the server starts itself (requests, notifications) go to the session's GET stream.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::Response;
use futures_util::StreamExt;
use tessera_session::{FailureReason, SessionGuard};
use tokio::sync::mpsc;

use super::{Accept, HttpSession, Link, State, error_response, message_response};
use crate::error::McpError;
use crate::jsonrpc::{Kind, Message};
use crate::lines::Line;
use crate::metrics;
use crate::outbox::LineTx;
use crate::progress::{self, Routes};
use crate::session::{Direction, McpSession};
use crate::upstream::child::{self, ChildSpec};

/// Starts the session's child, its stdout reader (a task of the session) and its stopper (a task of the
/// server, which outlives the session long enough to stop the child).
pub(crate) fn start(
    state: &Arc<State>,
    guard: &SessionGuard<Message>,
    mcp: McpSession,
    spec: &ChildSpec,
) -> Result<Arc<HttpSession>, McpError> {
    let session = guard.session();
    let (mut child, input, mut output) = child::spawn(spec, session)?;
    let (stream_tx, stream_rx) = mpsc::channel(state.config.stream_queue.max(1));
    let progress = Routes::new(state.sessions.config().pending.per_session);
    let reader_routes = progress.clone();
    let reader_mcp = mcp.clone();
    let reader_input = input.clone();
    let to_stream = stream_tx.clone();
    let tape = state.tape.clone();
    let rules_state = state.clone();
    session.spawn(async move {
        while let Some(line) = output.next().await {
            let bytes = match line {
                Ok(Line::Frame(bytes)) => bytes,
                Ok(Line::TooLong) => {
                    metrics::malformed(Direction::ServerToClient);
                    continue;
                }
                Err(_) => break,
            };
            let message = match Message::parse(bytes) {
                Ok(m) => m,
                Err(e) => {
                    metrics::malformed(Direction::ServerToClient);
                    tracing::warn!(session = %reader_mcp.id(), error = %e, "malformed message from the server");
                    continue;
                }
            };
            if let Some(back) = super::intercept::server(&rules_state, &reader_mcp, &message) {
                if let Some(error) = back {
                    reader_input.send(&error).await;
                }
                continue;
            }
            let to = Outlets {
                stream: &stream_tx,
                progress: &reader_routes,
            };
            from_server(&reader_mcp, &reader_input, to, tape.as_ref(), message).await;
        }
        tracing::info!(session = %reader_mcp.id(), "the server closed its stdout: ending the session");
        reader_mcp.session().fail(FailureReason::error("the upstream server exited"));
    })?;
    let ended = session.clone();
    state.tracker.spawn(async move {
        tokio::select! {
            _ = ended.ended() => {
                let _ = child.shutdown().await;
            }
            status = child.wait() => {
                tracing::debug!(session = %ended.id(), ?status, "child exited");
            }
        }
    });
    Ok(Arc::new(HttpSession {
        mcp,
        link: Link::Child {
            input,
            stream: Mutex::new(Some(stream_rx)),
            to_stream,
            history: Mutex::new(super::get::History::default()),
            progress,
            streams: Arc::default(),
        },
    }))
}

/// Where the child's messages go besides responses.
struct Outlets<'a> {
    /// The session's GET stream.
    stream: &'a mpsc::Sender<Message>,
    /// Response streams of requests that carry a progress token.
    progress: &'a Routes,
}

/// One message from the child: a response resolves its request's waiter; a progress notification goes to
/// its request's response stream when that is an SSE stream; anything else goes to the GET stream
/// (dropped, with a warning, when the stream's queue is full).
async fn from_server(
    mcp: &McpSession,
    input: &LineTx,
    to: Outlets<'_>,
    tape: Option<&crate::tape::Tape>,
    message: Message,
) {
    let stream = to.stream;
    let meta = mcp.observe(&message);
    metrics::frame(Direction::ServerToClient);
    let mut correlated = None;
    match message.kind() {
        Kind::Response { .. } => {
            match mcp.correlate_response(Direction::ServerToClient, &message) {
                Some(c) => correlated = Some(c),
                None => {
                    tracing::debug!(session = %mcp.id(), id = ?message.id(), "uncorrelated response dropped");
                    return;
                }
            }
        }
        Kind::Request { id, .. } => match mcp.track_request(Direction::ServerToClient, &message) {
            Ok(pending) => {
                let (id, input, to_client) = (id.clone(), input.clone(), stream.clone());
                let _ = mcp.session().spawn(async move {
                    if let Err(Some(expired)) = McpSession::outcome(pending, &id).await {
                        metrics::expired();
                        input.send(&expired.reply).await;
                        let _ = to_client.try_send(expired.cancel);
                    }
                });
            }
            Err(refusal) => {
                input.send(&refusal.reply).await;
                return;
            }
        },
        Kind::Notification { method } if &**method == "notifications/cancelled" => {
            mcp.cancelled_by(Direction::ServerToClient, &message);
        }
        _ => {}
    }
    if let Some(tape) = tape {
        tape.frame(
            &meta,
            Direction::ServerToClient,
            &message,
            correlated.as_ref(),
        );
    }
    if correlated.is_some() {
        return;
    }
    let message = match to.progress.deliver(message) {
        Ok(()) => return,
        Err(unrouted) => unrouted,
    };
    if stream.try_send(message).is_err() {
        tracing::warn!(session = %mcp.id(), "GET stream queue full: a server message was dropped");
    }
}

/// A client message for the child.
pub(crate) async fn post(
    state: &Arc<State>,
    session: &Arc<HttpSession>,
    input: &LineTx,
    message: Message,
    accept: Accept,
    new_session: bool,
) -> Response {
    let mcp = &session.mcp;
    let meta = mcp.observe(&message);
    metrics::frame(Direction::ClientToServer);
    if let Some(tape) = &state.tape {
        tape.frame(&meta, Direction::ClientToServer, &message, None);
    }
    let id = match message.kind() {
        Kind::Request { id, .. } => id.clone(),
        Kind::Notification { method } => {
            if &**method == "notifications/cancelled" {
                mcp.cancelled_by(Direction::ClientToServer, &message);
            }
            return accepted(input.send(&message).await);
        }
        Kind::Response { .. } => {
            if mcp
                .correlate_response(Direction::ClientToServer, &message)
                .is_none()
            {
                tracing::debug!(session = %mcp.id(), "uncorrelated client response dropped");
                return accepted(true);
            }
            return accepted(input.send(&message).await);
        }
        Kind::Batch => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "Bad Request: batches are not supported",
            );
        }
    };
    let pending = match mcp.track_request(Direction::ClientToServer, &message) {
        Ok(p) => p,
        Err(refusal) => return message_response(&refusal.reply, accept, None),
    };
    let mut withdraw = mcp.withdraw_on_drop(pending.ticket());
    // A request with a progress token, from a client that takes SSE, is answered with a stream carrying
    // its progress; the route exists before the child can see the request.
    let routed = match (&session.link, progress::token(&message)) {
        (Link::Child { progress, .. }, Some(token)) if accept.sse && !new_session => {
            let (tx, rx) = mpsc::channel(64);
            progress
                .add(&progress::progress_key(token), None, tx)
                .map(|guard| (guard, rx))
        }
        _ => None,
    };
    if !input.send(&message).await {
        return error_response(
            StatusCode::BAD_GATEWAY,
            "Bad Gateway: the upstream server is gone",
        );
    }
    if let Some((guard, notes)) = routed {
        let input = input.clone();
        let request = id.clone();
        let ended = mcp.clone();
        let outcome = async move {
            let response = match McpSession::outcome(pending, &id).await {
                Ok(response) => Some(response),
                Err(Some(expired)) => {
                    metrics::expired();
                    input.send(&expired.cancel).await;
                    Some(expired.reply)
                }
                // The client cancelled it: no response.
                Err(None) if !ended.session().is_ended() => None,
                Err(None) => Some(Message::error_reply(
                    Some(&id),
                    crate::jsonrpc::PROXY_ERROR,
                    "the session ended before the response",
                )),
            };
            withdraw.disarm();
            response
        };
        let window = state.config.resume_window_ms;
        if let Link::Child { streams, .. } = &session.link
            && window > 0
            && super::get::primes(session)
        {
            match streams.start(
                mcp,
                request,
                notes,
                outcome,
                guard,
                std::time::Duration::from_millis(window),
                state.config.sse_retry_ms,
            ) {
                Ok(response) => return response,
                Err((notes, outcome, guard)) => {
                    return super::streamed::response(notes, outcome, vec![guard], None);
                }
            }
        }
        return super::streamed::response(notes, outcome, vec![guard], None);
    }
    let response = match McpSession::outcome(pending, &id).await {
        Ok(response) => response,
        Err(Some(expired)) => {
            metrics::expired();
            input.send(&expired.cancel).await;
            expired.reply
        }
        // The client cancelled it (`notifications/cancelled`): the session lives on, and a cancelled
        // request gets no response. A 404 would tell the client its session is gone.
        Err(None) if !mcp.session().is_ended() => return super::cancelled_response(accept, &id),
        Err(None) => {
            return error_response(StatusCode::NOT_FOUND, "Session ended before the response");
        }
    };
    withdraw.disarm();
    let session_header = if new_session {
        if response.is_error() {
            mcp.session().close();
            None
        } else {
            Some(mcp.id())
        }
    } else {
        None
    };
    message_response(&response, accept, session_header)
}

fn accepted(sent: bool) -> Response {
    if sent {
        axum::response::IntoResponse::into_response(StatusCode::ACCEPTED)
    } else {
        error_response(
            StatusCode::BAD_GATEWAY,
            "Bad Gateway: the upstream server is gone",
        )
    }
}
