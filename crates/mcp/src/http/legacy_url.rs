//! The old HTTP+SSE transport (2024-11-05) in front of a URL upstream that speaks Streamable HTTP: the
//! proxy translates. `GET /sse` opens a session whose first event is `endpoint`; each `POST /message` is
//! answered 202 at once and sent upstream as a Streamable HTTP POST (the upstream's session id kept by the
//! proxy, `MCP-Protocol-Version` the negotiated one), and every message of the upstream's answer — JSON or
//! SSE — comes on the client's stream as a `message` event. Once `initialize` has succeeded, the upstream's
//! own GET stream (server-initiated messages) is poured onto the client's stream too. Closing the client's
//! stream ends the session and the upstream's (DELETE).

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{HttpSession, Link, MCP_PROTOCOL_VERSION, State, sse};
use crate::jsonrpc::{Message, PROXY_ERROR};

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
        let poured = pour(response, state.config.max_body, &to_stream).await;
        if poured == 0
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
            // Server-initiated messages: the upstream's GET stream, for as long as the session lives.
            let headers = upstream_headers(&session_ref, &headers);
            let stream = crate::upstream::http::get(&state, &session_ref, &headers).await;
            if stream.status() == StatusCode::OK {
                pour(stream, state.config.max_body, &to_stream).await;
            }
        }
    });
    if spawned.is_err() {
        tracing::debug!("legacy session ended before its message was sent");
    }
}

/// Puts every message of an upstream answer (a JSON body or an SSE stream) on the client's stream; returns
/// how many.
async fn pour(response: Response, max: usize, to_stream: &mpsc::Sender<Message>) -> usize {
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut body = response.into_body().into_data_stream();
    let mut count = 0;
    if is_sse {
        let mut parser = sse::Parser::new(max);
        while let Some(Ok(chunk)) = body.next().await {
            let mut messages = Vec::new();
            parser.feed(&chunk, |event| {
                if let Ok(m) = Message::parse(Bytes::from(event.data)) {
                    messages.push(m);
                }
            });
            for m in messages {
                if to_stream.send(m).await.is_err() {
                    return count;
                }
                count += 1;
            }
        }
        return count;
    }
    let mut json = BytesMut::new();
    while let Some(Ok(chunk)) = body.next().await {
        if json.len() + chunk.len() > max {
            return count;
        }
        json.extend_from_slice(&chunk);
    }
    if let Ok(m) = Message::parse(json.freeze())
        && to_stream.send(m).await.is_ok()
    {
        count += 1;
    }
    count
}

/// Ends the upstream's session when the client's stream goes (from a task of the server).
pub(crate) fn end_upstream(state: &Arc<State>, session: &Arc<HttpSession>) {
    let (state, session) = (state.clone(), session.clone());
    let tracker = state.tracker.clone();
    tracker.spawn(async move {
        crate::upstream::http::delete(&state, &session, &HeaderMap::new()).await;
    });
}
