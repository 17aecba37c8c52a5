//! The old HTTP+SSE transport (2024-11-05) in front of a URL upstream that speaks Streamable HTTP: the
//! proxy translates. `GET /sse` opens a session whose first event is `endpoint`; each `POST /message` is
//! answered 202 at once and sent upstream as a Streamable HTTP POST (the upstream's session id kept by the
//! proxy, `MCP-Protocol-Version` the negotiated one), and every message of the upstream's answer — JSON or
//! SSE — comes on the client's stream as a `message` event. Once `initialize` has succeeded, the upstream's
//! own GET stream (server-initiated messages) is poured onto the client's stream too, and reopened (with
//! `Last-Event-ID`) when the upstream closes it. An answer stream that ends before its response (a 2025-11-25
//! server polling) is resumed with GET and `Last-Event-ID` on the client's behalf. Closing the client's
//! stream ends the session and the upstream's (DELETE).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{HttpSession, LAST_EVENT_ID, Link, MCP_PROTOCOL_VERSION, State, sse};
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

/// `POST /message` for a legacy session over a URL upstream: sent upstream by a task of the session, the
/// answer poured onto the client's stream. Returns at once (202).
pub(crate) fn message(
    state: &Arc<State>,
    session: &Arc<HttpSession>,
    client: &HeaderMap,
    message: Message,
    to_stream: mpsc::Sender<Message>,
) {
    let headers = upstream_headers(session, client);
    let new_session = message.method() == Some("initialize")
        && matches!(&session.link, Link::Url { upstream_id, .. } if upstream_id.get().is_none());
    let (state, session_ref) = (state.clone(), session.clone());
    let spawned = session.mcp.session().spawn(async move {
        let request = message.id().filter(|_| message.is_request()).cloned();
        let response =
            crate::upstream::http::post(&state, &session_ref, &headers, message, new_session, None)
                .await;
        let status = response.status();
        let mut parser = sse::Parser::new(state.config.max_body);
        let mut poured = pour(response, &mut parser, request.as_ref(), &to_stream).await;
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
                let mut get_headers = upstream_headers(&session_ref, &headers);
                get_headers.insert(LAST_EVENT_ID.clone(), last);
                let stream = crate::upstream::http::get(&state, &session_ref, &get_headers).await;
                if stream.status() != StatusCode::OK {
                    break;
                }
                let more = pour(stream, &mut parser, Some(id), &to_stream).await;
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
        if new_session && status.is_success() {
            server_stream(&state, &session_ref, &headers, &to_stream).await;
        }
    });
    if spawned.is_err() {
        tracing::debug!("legacy session ended before its message was sent");
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
        .is_some_and(|v| v.starts_with("text/event-stream"));
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

/// Ends the upstream's session when the client's stream goes (from a task of the server).
pub(crate) fn end_upstream(state: &Arc<State>, session: &Arc<HttpSession>) {
    let (state, session) = (state.clone(), session.clone());
    let tracker = state.tracker.clone();
    tracker.spawn(async move {
        crate::upstream::http::delete(&state, &session, &HeaderMap::new()).await;
    });
}
