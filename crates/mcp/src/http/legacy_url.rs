//! The old HTTP+SSE transport (2024-11-05) in front of a URL upstream that speaks Streamable HTTP: the
//! proxy translates. `GET /sse` opens a session whose first event is `endpoint`; each `POST /message` is
//! answered 202 at once and sent upstream as a Streamable HTTP POST (the upstream's session id kept by the
//! proxy, `MCP-Protocol-Version` the negotiated one), and every message of the upstream's answer — JSON or
//! SSE — comes on the client's stream as a `message` event. Once `initialize` has succeeded, the upstream's
//! own GET stream (server-initiated messages) is poured onto the client's stream too, and reopened (with
//! `Last-Event-ID`) when the upstream closes it. An answer stream that ends before its response (a 2025-11-25
//! server polling) is resumed with GET and `Last-Event-ID` on the client's behalf. Closing the client's
//! stream ends the session and the upstream's (DELETE).

use std::sync::{Arc, Mutex, PoisonError};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{HttpSession, LAST_EVENT_ID, Link, MCP_PROTOCOL_VERSION, State, error_response, sse};
use crate::jsonrpc::{Id, Kind, Message, PROXY_ERROR};

/// Most messages waiting for the client's stream.
pub(crate) const STREAM_QUEUE: usize = 256;

/// A new legacy session over the URL upstream, with the way into its client stream.
pub(crate) fn session(mcp: crate::McpSession) -> (Arc<HttpSession>, mpsc::Receiver<Message>) {
    let (to_stream, rx) = mpsc::channel(STREAM_QUEUE);
    let session = Arc::new(HttpSession {
        mcp,
        link: Link::Url {
            upstream_id: Default::default(),
            legacy: Some(to_stream),
        },
    });
    (session, rx)
}

/// The headers of the upstream POST or GET for a legacy client's request: its credentials, the content
/// types Streamable HTTP asks for, and the negotiated version.
fn upstream_headers(session: &HttpSession, client: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(v) = client.get(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, v.clone());
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    if let Some(version) = session
        .mcp
        .negotiated()
        .and_then(|n| n.protocol_version)
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(MCP_PROTOCOL_VERSION.clone(), version);
    }
    headers
}

/// Most client messages waiting to be sent upstream, per session: past that, `POST /message` → 429.
pub(crate) const SEND_QUEUE: usize = 64;
/// Most upstream answers being poured onto one client's stream at once: the sender waits for one to end
/// before it sends the next message.
pub(crate) const MAX_ANSWERS: usize = 16;

/// One session's way upstream: a bounded queue read by one sender task (so messages reach the upstream in
/// the order they came), and the client's latest credentials, for the upstream DELETE at the end.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Queued>,
    authorization: Mutex<Option<HeaderValue>>,
}

struct Queued {
    message: Message,
    authorization: Option<HeaderValue>,
}

/// The headers of a client message, as far as the upstream sees them: its `Authorization`.
fn client_headers(authorization: Option<&HeaderValue>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(v) = authorization {
        headers.insert(header::AUTHORIZATION, v.clone());
    }
    headers
}

/// `POST /message` for a legacy session over a URL upstream: queued for the session's sender, which sends
/// it upstream (in order, after the messages before it got their answer's head) and pours the answer onto
/// the client's stream. 202 at once; 429 (with `Retry-After`) when the session's queue is full, 404 when
/// the session has ended.
pub(crate) fn message(
    state: &Arc<State>,
    session: &Arc<HttpSession>,
    client: &HeaderMap,
    message: Message,
    to_stream: mpsc::Sender<Message>,
) -> Response {
    let Some(outbox) = outbox(state, session, to_stream) else {
        return error_response(StatusCode::NOT_FOUND, "Session not found");
    };
    let authorization = client.get(header::AUTHORIZATION).cloned();
    if authorization.is_some() {
        *outbox
            .authorization
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = authorization.clone();
    }
    let queued = Queued {
        message,
        authorization,
    };
    match outbox.tx.try_send(queued) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(mpsc::error::TrySendError::Full(_)) => {
            let mut busy = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "Too Many Requests: the session's messages wait for the upstream",
            );
            busy.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            busy
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            error_response(StatusCode::NOT_FOUND, "Session not found")
        }
    }
}

/// The session's outbox, started (with its sender, a task of the session) on first use; `None` once the
/// session has ended.
fn outbox(
    state: &Arc<State>,
    session: &Arc<HttpSession>,
    to_stream: mpsc::Sender<Message>,
) -> Option<Arc<Outbox>> {
    let id = session.mcp.id();
    let mut outboxes = state
        .legacy_outboxes
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = outboxes.get(&id) {
        return Some(found.clone());
    }
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let outbox = Arc::new(Outbox {
        tx,
        authorization: Mutex::new(None),
    });
    let end = EndUpstream {
        state: state.clone(),
        session: session.clone(),
        outbox: outbox.clone(),
    };
    let sender = send_all(state.clone(), session.clone(), rx, to_stream, end);
    // A session that has ended runs nothing: no outbox then.
    session.mcp.session().spawn(sender).ok()?;
    outboxes.insert(id, outbox.clone());
    Some(outbox)
}

/// The session's sender: each queued message POSTed upstream once the one before it has its answer's head
/// (at most [`MAX_ANSWERS`] answers poured at once, each by a task of the session).
async fn send_all(
    state: Arc<State>,
    session: Arc<HttpSession>,
    mut rx: mpsc::Receiver<Queued>,
    to_stream: mpsc::Sender<Message>,
    end: EndUpstream,
) {
    let _end = end;
    let answers = Arc::new(tokio::sync::Semaphore::new(MAX_ANSWERS));
    while let Some(queued) = rx.recv().await {
        let Ok(permit) = answers.clone().acquire_owned().await else {
            return;
        };
        let headers = upstream_headers(&session, &client_headers(queued.authorization.as_ref()));
        let message = queued.message;
        let new_session = message.method() == Some("initialize")
            && matches!(&session.link, Link::Url { upstream_id, .. } if upstream_id.get().is_none());
        let request = message.id().filter(|_| message.is_request()).cloned();
        let response =
            crate::upstream::http::post(&state, &session, &headers, message, new_session, None)
                .await;
        let (state, session_ref, to_stream) = (state.clone(), session.clone(), to_stream.clone());
        let answer = async move {
            let _permit = permit;
            pour_answer(
                &state,
                &session_ref,
                &headers,
                request,
                response,
                &to_stream,
            )
            .await;
            if new_session && session_ref.mcp.negotiated().is_some() {
                server_stream(&state, &session_ref, &headers, &to_stream).await;
            }
        };
        if session.mcp.session().spawn(answer).is_err() {
            return;
        }
    }
}

/// Puts an upstream answer on the client's stream, resuming it (`Last-Event-ID`) if it ended before the
/// response; a failure without any message becomes a `-32000` error for the request.
async fn pour_answer(
    state: &Arc<State>,
    session: &Arc<HttpSession>,
    headers: &HeaderMap,
    request: Option<Id>,
    response: Response,
    to_stream: &mpsc::Sender<Message>,
) {
    let status = response.status();
    let mut parser = sse::Parser::new(state.config.max_body);
    let mut poured = pour(response, &mut parser, request.as_ref(), to_stream).await;
    if let Some(id) = &request
        && !poured.answered
    {
        // The answer stream ended before the response (a server closing it to be polled, or a break):
        // resumed with `Last-Event-ID` as a Streamable HTTP client would, since this client cannot.
        let mut tries = 0;
        while !poured.answered && tries < sse::MAX_RESUMES {
            let Some(last) = parser
                .last_event_id()
                .and_then(|v| HeaderValue::from_str(v).ok())
            else {
                break;
            };
            tries += 1;
            tokio::time::sleep(parser.reconnect_delay()).await;
            let mut get_headers = upstream_headers(session, headers);
            get_headers.insert(LAST_EVENT_ID.clone(), last);
            let stream = crate::upstream::http::get(state, session, &get_headers).await;
            if stream.status() != StatusCode::OK {
                break;
            }
            let more = pour(stream, &mut parser, Some(id), to_stream).await;
            poured.count += more.count;
            poured.answered = more.answered;
        }
    }
    if poured.count == 0
        && !status.is_success()
        && let Some(id) = request
    {
        let error = Message::error_reply(
            Some(&id),
            PROXY_ERROR,
            &format!("the upstream answered {status}"),
        );
        let _ = to_stream.send(error).await;
    }
}

/// Server-initiated messages: the upstream's GET stream, for as long as the session lives. When it ends it
/// is opened again (with `Last-Event-ID` when its events had ids) after the server's `retry`;
/// [`sse::MAX_RESUMES`] ends in a row that brought nothing stop it.
async fn server_stream(
    state: &Arc<State>,
    session: &Arc<HttpSession>,
    client: &HeaderMap,
    to_stream: &mpsc::Sender<Message>,
) {
    let mut parser = sse::Parser::new(state.config.max_body);
    let mut idle_ends = 0;
    while idle_ends < sse::MAX_RESUMES && !session.mcp.session().token().is_cancelled() {
        let mut headers = upstream_headers(session, client);
        if let Some(last) = parser
            .last_event_id()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(LAST_EVENT_ID.clone(), last);
        }
        let stream = crate::upstream::http::get(state, session, &headers).await;
        if stream.status() != StatusCode::OK {
            return;
        }
        let poured = pour(stream, &mut parser, None, to_stream).await;
        if to_stream.is_closed() {
            return;
        }
        idle_ends = if poured.count == 0 { idle_ends + 1 } else { 0 };
        tokio::time::sleep(parser.reconnect_delay()).await;
    }
}

/// What [`pour`] put on the client's stream.
struct Poured {
    count: usize,
    /// The response to the request it was waiting for came.
    answered: bool,
}

/// Puts every message of an upstream answer (a JSON body or an SSE stream, read with `parser`, which keeps
/// the last event id and `retry` for a resumption) on the client's stream.
async fn pour(
    response: Response,
    parser: &mut sse::Parser,
    request: Option<&Id>,
    to_stream: &mpsc::Sender<Message>,
) -> Poured {
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::http::sse::is_event_stream);
    let mut body = response.into_body().into_data_stream();
    let mut poured = Poured {
        count: 0,
        answered: false,
    };
    let put = |m: &Message, poured: &mut Poured| {
        if request.is_some_and(|id| matches!(m.kind(), Kind::Response { .. }) && m.id() == Some(id))
        {
            poured.answered = true;
        }
        poured.count += 1;
    };
    if is_sse {
        while let Some(Ok(chunk)) = body.next().await {
            let mut messages = Vec::new();
            parser.feed(&chunk, |event| {
                if let Ok(m) = Message::parse(Bytes::from(event.data)) {
                    messages.push(m);
                }
            });
            for m in messages {
                put(&m, &mut poured);
                if to_stream.send(m).await.is_err() {
                    return poured;
                }
            }
            if poured.answered {
                return poured;
            }
        }
        return poured;
    }
    let max = parser.max_event();
    let mut json = BytesMut::new();
    while let Some(Ok(chunk)) = body.next().await {
        if json.len() + chunk.len() > max {
            return poured;
        }
        json.extend_from_slice(&chunk);
    }
    if let Ok(m) = Message::parse(json.freeze()) {
        put(&m, &mut poured);
        if to_stream.send(m).await.is_err() {
            poured.count -= 1;
        }
    }
    poured
}

/// Ends the upstream's session when the client's stream goes. A session that sent anything has an
/// outbox, whose sender ends the upstream's session when ours ends ([`EndUpstream`], with the client's
/// credentials); without one there is no upstream session to end.
pub(crate) fn end_upstream(state: &Arc<State>, session: &Arc<HttpSession>) {
    let _ = (state, session);
}

/// Held by a session's sender: when the session ends, its outbox goes and the upstream's session is ended
/// (DELETE with the client's latest `Authorization` and the negotiated version, from a task of the server,
/// given up after the control timeout).
struct EndUpstream {
    state: Arc<State>,
    session: Arc<HttpSession>,
    outbox: Arc<Outbox>,
}

impl Drop for EndUpstream {
    fn drop(&mut self) {
        let id = self.session.mcp.id();
        {
            let mut outboxes = self
                .state
                .legacy_outboxes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if outboxes
                .get(&id)
                .is_some_and(|o| Arc::ptr_eq(o, &self.outbox))
            {
                outboxes.remove(&id);
            }
        }
        let authorization = self
            .outbox
            .authorization
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let headers = upstream_headers(&self.session, &client_headers(authorization.as_ref()));
        let (state, session) = (self.state.clone(), self.session.clone());
        self.state.tracker.spawn(async move {
            crate::upstream::http::delete(&state, &session, &headers).await;
        });
    }
}
