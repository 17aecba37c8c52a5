//! The old HTTP+SSE transport (2024-11-05), for older clients: `GET /sse` opens a session (and, over a
//! command upstream, its child) whose first event is `endpoint` (`/message?sessionId=…`); the client POSTs
//! each message there (answered 202), and every server message — responses included — arrives as a
//! `message` event on the GET stream. Closing the stream ends the session. Over a URL upstream the proxy
//! translates to Streamable HTTP (`http::legacy_url`). Both requests' headers and every frame go
//! to the tape; interception rules run over the client's messages (a blocked request's error comes on the
//! stream).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use axum::body::Body;
use axum::extract::{Query, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tessera_session::SessionId;

use super::{HttpSession, Link, State, check_origin, error_response, sse};
use crate::jsonrpc::{Kind, MAX_BATCH, Message};
use crate::metrics;
use crate::session::{Direction, McpSession};

/// Ends the session when its stream is dropped: in this transport the stream is the session (over a URL
/// upstream, the upstream's session is ended too).
struct CloseOnDrop(Arc<HttpSession>, Arc<State>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Link::Url { .. } = &self.0.link {
            super::legacy_url::end_upstream(&self.1, &self.0);
        }
        self.0.mcp.session().close();
    }
}

/// `GET /sse`.
pub(crate) async fn open(Extract(state): Extract<Arc<State>>, headers: HeaderMap) -> Response {
    if let Err(denied) = check_origin(&headers, &state.config) {
        return denied;
    }
    let (guard, mcp) = match state.sessions.create("mcp-http-sse") {
        Ok(s) => s,
        Err(e) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("Service Unavailable: {e}"),
            );
        }
    };
    let (session, rx) = match &state.config.upstream {
        super::Upstream::Command(spec) => match super::command::start(&state, &guard, mcp, spec) {
            Ok(s) => {
                let Link::Child { stream, .. } = &s.link else {
                    return error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "not a command session",
                    );
                };
                let taken = stream.lock().unwrap_or_else(PoisonError::into_inner).take();
                let Some(rx) = taken else {
                    return error_response(StatusCode::CONFLICT, "Conflict: stream already open");
                };
                (s, rx)
            }
            Err(e) => {
                return error_response(StatusCode::BAD_GATEWAY, &format!("Bad Gateway: {e}"));
            }
        },
        super::Upstream::Url(_) => super::legacy_url::session(mcp),
    };
    if let Err(e) = state.register(guard, session.clone()) {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Service Unavailable: {e}"),
        );
    }
    let id = session.mcp.id();
    if let Some(tape) = &state.tape {
        tape.session_started(id, "http+sse");
    }
    super::post::record_request(&state, Some(id), "GET", "/sse", None, &headers);
    let endpoint = Bytes::from(format!(
        "event: endpoint\ndata: /message?sessionId={}\n\n",
        session.mcp.id()
    ));
    let ended = session.mcp.session().token();
    let owner = CloseOnDrop(session, state.clone());
    let live = futures_util::stream::unfold((rx, owner), |(mut rx, owner)| async move {
        let message = rx.recv().await?;
        Some((sse::message_event(&message.line_safe(), None), (rx, owner)))
    });
    let events = futures_util::stream::once(async move { endpoint })
        .chain(live)
        .map(Ok::<_, std::convert::Infallible>)
        .take_until(ended.cancelled_owned());
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::Extension(super::recorded::AnswerSession(id)),
        Body::from_stream(events),
    )
        .into_response()
}

/// `POST /message?sessionId=…`.
pub(crate) async fn message(
    Extract(state): Extract<Arc<State>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = check_origin(&headers, &state.config) {
        return denied;
    }
    let id = query
        .get("sessionId")
        .and_then(|s| s.parse::<SessionId>().ok());
    let found = id.and_then(|id| {
        state
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    });
    let Some(session) = found.filter(|s| !s.mcp.session().is_ended()) else {
        return error_response(StatusCode::NOT_FOUND, "Session not found");
    };
    let to_stream = match &session.link {
        Link::Child { to_stream, .. } => to_stream,
        Link::Url {
            legacy: Some(to_stream),
            ..
        } => to_stream,
        Link::Url { .. } => return error_response(StatusCode::NOT_FOUND, "Session not found"),
    };
    let message = match Message::parse(body) {
        Ok(m) => m,
        Err(e) => return super::json_response(StatusCode::BAD_REQUEST, &e.reply(), None),
    };
    super::post::record_request(
        &state,
        Some(session.mcp.id()),
        "POST",
        "/message",
        Some(&message),
        &headers,
    );
    // A batch goes element by element, each through the rules, the tracking and the limits as if posted
    // alone (its answers reach the stream one by one); forwarded whole it would pass none of them.
    let elements = match message.batch_elements(MAX_BATCH) {
        Some(elements) => elements,
        None if matches!(message.kind(), Kind::Batch) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("Payload Too Large: more than {MAX_BATCH} messages in a batch"),
            );
        }
        None => vec![Ok(message)],
    };
    for element in elements {
        match element {
            Ok(message) => {
                if let Some(refused) = deliver(&state, &session, &headers, to_stream, message).await
                {
                    return refused;
                }
            }
            Err(reply) => {
                let _ = to_stream.try_send(reply);
            }
        }
    }
    StatusCode::ACCEPTED.into_response()
}

/// One message of a `POST /message` to its session's upstream: rules, tracking, then the child's input
/// or the URL upstream. `Some` answers the POST at once (the upstream is gone).
async fn deliver(
    state: &Arc<State>,
    session: &Arc<HttpSession>,
    headers: &HeaderMap,
    to_stream: &tokio::sync::mpsc::Sender<Message>,
    message: Message,
) -> Option<Response> {
    let mcp = &session.mcp;
    if let Some(rules) = state.config.rules.current()
        && let Some(verdict) = crate::rules::apply(
            &rules,
            Some(mcp),
            Direction::ClientToServer,
            &message,
            state.tape.as_ref(),
        )
        && let Some(reply) = crate::rules::blocked_reply(&message, &verdict)
    {
        if let Some(error) = reply {
            let _ = to_stream.try_send(error);
        }
        return None;
    }
    let Link::Child { input, .. } = &session.link else {
        // A URL upstream: translated to a Streamable HTTP POST (which counts and records the frame).
        // Queued for the session's sender (202); a full queue (429) or an ended session ends the POST.
        let queued =
            super::legacy_url::message(state, session, headers, message, to_stream.clone());
        return (queued.status() != StatusCode::ACCEPTED).then_some(queued);
    };
    let meta = mcp.observe(&message);
    metrics::frame(Direction::ClientToServer);
    if let Some(tape) = &state.tape {
        tape.frame(&meta, Direction::ClientToServer, &message, None);
    }
    match message.kind() {
        Kind::Request { id, .. } => match mcp.track_request(Direction::ClientToServer, &message) {
            Ok(pending) => {
                let (id, input, to_stream, waiter) =
                    (id.clone(), input.clone(), to_stream.clone(), mcp.clone());
                let _ = mcp.session().spawn(async move {
                    let reply = match McpSession::outcome(pending, &id).await {
                        Ok(response) => response,
                        Err(Some(expired)) => {
                            input.send(&expired.cancel).await;
                            expired.reply
                        }
                        Err(None) => return,
                    };
                    if to_stream.send(reply).await.is_err() {
                        tracing::debug!(session = %waiter.id(), "SSE stream gone before the response");
                    }
                });
            }
            Err(refusal) => {
                let _ = to_stream.try_send(refusal.reply);
                return None;
            }
        },
        Kind::Response { .. }
            if mcp
                .correlate_response(Direction::ClientToServer, &message)
                .is_none() =>
        {
            return None;
        }
        Kind::Notification { method } if &**method == "notifications/cancelled" => {
            mcp.cancelled_by(Direction::ClientToServer, &message);
        }
        _ => {}
    }
    if !input.send(&message).await {
        return Some(error_response(
            StatusCode::BAD_GATEWAY,
            "Bad Gateway: the upstream server is gone",
        ));
    }
    None
}
