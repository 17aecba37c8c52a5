//! JSON-RPC batches (allowed in a POST body by 2025-03-26 only): the proxy splits the array and sends each
//! element up through the session's link as if it had come alone, so every request is tracked, limited and
//! correlated on its own. The answers are put back together: 202 when the batch held no request, else the
//! responses as a JSON array (in the order the requests came), or, when the client takes SSE and the server
//! also sent other messages on the way (progress, server requests), everything as one SSE stream.
//!
//! An element that is not a JSON-RPC message gets its own error response in the array (`-32700`/`-32600`,
//! id null), as JSON-RPC 2.0 says for batches. `initialize` may not be batched (2025-03-26), and the
//! stateless revision has no batches: both → 400.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;

use super::{Accept, HttpSession, State, error_response, error_response_code, sse};
use crate::jsonrpc::{Id, Kind, Message};

/// Most elements in one batch.
pub const MAX_BATCH: usize = 256;

/// The bytes of answers one batch collects in all, in message limits (`max_body`; 16 MiB by default):
/// each element's answer is held until the last one is in, so 256 answers of the message limit each would
/// otherwise hold a gigabyte for one request. A request whose answer does not fit gets an error instead.
pub const BATCH_ANSWERS_IN_MESSAGES: usize = 4;

/// Splits a batch body into its elements; `Err` is the HTTP answer for a batch that cannot be split.
#[allow(clippy::result_large_err)] // a handler's early answer
pub(crate) fn split(batch: &Message) -> Result<Vec<Result<Message, Message>>, Response> {
    let elements: Vec<&RawValue> = serde_json::from_slice(batch.raw())
        .map_err(|_| error_response_code(StatusCode::BAD_REQUEST, -32700, "Parse error"))?;
    if elements.is_empty() {
        return Err(error_response_code(
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: empty batch",
        ));
    }
    if elements.len() > MAX_BATCH {
        return Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("Payload Too Large: more than {MAX_BATCH} messages in a batch"),
        ));
    }
    Ok(elements
        .into_iter()
        .map(
            |raw| match Message::parse(Bytes::copy_from_slice(raw.get().as_bytes())) {
                Ok(m) if matches!(m.kind(), Kind::Batch) => Err(Message::error_reply(
                    None,
                    -32600,
                    "Invalid Request: nested batch",
                )),
                Ok(m) => Ok(m),
                Err(e) => Err(e.reply()),
            },
        )
        .collect())
}

/// What one element's answer held: responses, and other messages the server sent on the way.
#[derive(Default)]
struct Collected {
    responses: Vec<Message>,
    others: Vec<Message>,
}

impl Collected {
    fn push(&mut self, message: Message) {
        if matches!(message.kind(), Kind::Response { .. }) {
            self.responses.push(message);
        } else {
            self.others.push(message);
        }
    }
}

/// Reads one element's HTTP answer back into messages (a JSON body or an SSE stream), at most `limit`
/// bytes; the bytes read, or `None` when the answer was unreadable or over `limit`.
async fn collect(
    response: Response,
    limit: usize,
    into: &mut Collected,
    all: &mut Vec<Message>,
) -> Option<usize> {
    if response.status() == StatusCode::ACCEPTED {
        return Some(0);
    }
    let is_sse = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::http::sse::is_event_stream);
    let Ok(body) = axum::body::to_bytes(response.into_body(), limit).await else {
        tracing::warn!("a batch element's answer was unreadable or over the batch's limit");
        return None;
    };
    let read = body.len();
    let mut messages = Vec::new();
    if is_sse {
        let mut parser = sse::Parser::new(limit);
        parser.feed(&body, |event| {
            if event.data.is_empty() {
                return; // a priming event
            }
            if let Ok(m) = Message::parse(Bytes::from(event.data.into_bytes())) {
                messages.push(m);
            }
        });
    } else if let Ok(m) = Message::parse(body) {
        messages.push(m);
    }
    for m in messages {
        all.push(m.clone());
        into.push(m);
    }
    Some(read)
}

/// Handles a batch for an established session.
pub(crate) async fn post(
    state: &Arc<State>,
    session: &Arc<HttpSession>,
    headers: &HeaderMap,
    batch: Message,
    accept: Accept,
) -> Response {
    let elements = match split(&batch) {
        Ok(e) => e,
        Err(answer) => return answer,
    };
    if elements
        .iter()
        .any(|e| matches!(e, Ok(m) if m.method() == Some("initialize")))
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            "Bad Request: initialize must not be part of a batch",
        );
    }
    // Each element as if it came alone; the client's Accept covers JSON and SSE for the parts.
    let part_accept = Accept {
        json: true,
        sse: accept.sse,
    };
    // The requests' ids, to answer one whose answer cannot be collected.
    let ids: Vec<Option<Id>> = elements
        .iter()
        .map(|e| match e {
            Ok(m) if m.is_request() => m.id().cloned(),
            _ => None,
        })
        .collect();
    let answers = futures_util::future::join_all(elements.into_iter().map(|element| async move {
        match element {
            Ok(message) => {
                Ok(
                    super::post::forward(state, session, headers, message, part_accept, false)
                        .await,
                )
            }
            Err(reply) => Err(reply),
        }
    }))
    .await;
    let mut collected = Collected::default();
    let mut in_order = Vec::new();
    let mut budget = BATCH_ANSWERS_IN_MESSAGES.saturating_mul(state.config.max_body);
    for (answer, id) in answers.into_iter().zip(ids) {
        match answer {
            Ok(response) => {
                let limit = state.config.max_body.min(budget);
                match collect(response, limit, &mut collected, &mut in_order).await {
                    Some(read) => budget = budget.saturating_sub(read),
                    None => {
                        if let Some(id) = id {
                            let reply = Message::error_reply(
                                Some(&id),
                                crate::jsonrpc::PROXY_ERROR,
                                "the answer is over the proxy's limit for one message or one batch",
                            );
                            in_order.push(reply.clone());
                            collected.push(reply);
                        }
                    }
                }
            }
            Err(reply) => {
                in_order.push(reply.clone());
                collected.push(reply);
            }
        }
    }
    if in_order.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    if accept.sse && (!collected.others.is_empty() || !accept.json) {
        let mut out = BytesMut::new();
        for m in &in_order {
            out.extend_from_slice(&sse::message_event(&m.line_safe(), None));
        }
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from(out.freeze()),
        )
            .into_response();
    }
    if collected.responses.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    let mut out = BytesMut::with_capacity(
        collected
            .responses
            .iter()
            .map(|m| m.raw().len() + 1)
            .sum::<usize>()
            + 2,
    );
    out.extend_from_slice(b"[");
    for (i, m) in collected.responses.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(m.raw());
    }
    out.extend_from_slice(b"]");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(out.freeze()),
    )
        .into_response()
}
