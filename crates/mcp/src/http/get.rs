//! GET: the session's stream of server-initiated messages (SSE). One stream at a time per session (a second
//! gets 409, as the TypeScript SDK answers); the stream ends when the session does.
//!
//! Command upstream: event ids are unique per session; the last [`HISTORY`] events are kept, and a GET with
//! `Last-Event-ID` first replays those after it, then goes on live. For a session of 2025-11-25 or later a
//! fresh stream opens with a priming event (`id` = the last id so far, `retry`, empty `data`). (A URL upstream resumes by itself: the
//! header is forwarded.)

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError};

use axum::body::Body;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{
    HttpSession, LAST_EVENT_ID, Link, MCP_PROTOCOL_VERSION, State, check_origin, error_response,
    sse, version,
};
use crate::jsonrpc::Message;

/// The GET handler.
pub(crate) async fn get(Extract(state): Extract<Arc<State>>, headers: HeaderMap) -> Response {
    if let Err(denied) = check_origin(&headers, &state.config) {
        return denied;
    }
    if let Err(e) = version::parse(headers.get(&MCP_PROTOCOL_VERSION).map(|v| v.as_bytes())) {
        return error_response(StatusCode::BAD_REQUEST, &format!("Bad Request: {e}"));
    }
    let accepts_sse = headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")));
    if !accepts_sse {
        return error_response(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: GET needs Accept: text/event-stream",
        );
    }
    let session = match state.find(&headers) {
        Ok(s) => s,
        Err(not_found) => return not_found,
    };
    super::post::record_request(
        &state,
        Some(session.mcp.id()),
        "GET",
        "/mcp",
        None,
        &headers,
    );
    match &session.link {
        Link::Child { streams, .. } => {
            // `<stream>-<n>` names an event of a POST response stream: resume that stream.
            if let Some(id) = headers
                .get(&LAST_EVENT_ID)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.contains('-'))
            {
                return streams.resume(id).unwrap_or_else(|| {
                    error_response(StatusCode::NOT_FOUND, "Not Found: no such stream to resume")
                });
            }
            child_stream(session, last_event_id(&headers), state.config.sse_retry_ms)
        }
        Link::Url { .. } => crate::upstream::http::get(&state, &session, &headers).await,
    }
}

/// How many past events a session keeps for resumption.
pub const HISTORY: usize = 256;

/// A session's recent GET-stream events.
#[derive(Debug, Default)]
pub(crate) struct History {
    next_id: u64,
    events: VecDeque<(u64, Bytes)>,
}

impl History {
    /// Encodes a message as the next event and keeps it.
    fn record(&mut self, message: &Message) -> Bytes {
        self.next_id += 1;
        let event = sse::message_event(&message.line_safe(), Some(&self.next_id.to_string()));
        if self.events.len() == HISTORY {
            self.events.pop_front();
        }
        self.events.push_back((self.next_id, event.clone()));
        event
    }

    /// The id of the last event recorded (0 before the first).
    fn last_id(&self) -> u64 {
        self.next_id
    }

    /// The kept events after `last`.
    fn after(&self, last: u64) -> Vec<Bytes> {
        self.events
            .iter()
            .filter(|(id, _)| *id > last)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(&LAST_EVENT_ID)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Holds the session's stream receiver while a GET is open and gives it back when the GET ends.
struct Lease {
    session: Arc<HttpSession>,
    rx: Option<mpsc::Receiver<Message>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let (Link::Child { stream, .. }, Some(rx)) = (&self.session.link, self.rx.take()) {
            *stream.lock().unwrap_or_else(PoisonError::into_inner) = Some(rx);
        }
    }
}

/// True when the session negotiated 2025-11-25 or later (which know priming events and `retry`).
pub(crate) fn primes(session: &HttpSession) -> bool {
    session
        .mcp
        .negotiated()
        .and_then(|n| n.protocol_version)
        .is_some_and(|v| v.as_str() >= "2025-11-25")
}

fn child_stream(session: Arc<HttpSession>, resume_after: Option<u64>, retry_ms: u64) -> Response {
    let Link::Child {
        stream, history, ..
    } = &session.link
    else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "not a command session");
    };
    let Some(rx) = stream.lock().unwrap_or_else(PoisonError::into_inner).take() else {
        return error_response(
            StatusCode::CONFLICT,
            "Conflict: only one GET stream per session",
        );
    };
    let replay = {
        let history = history.lock().unwrap_or_else(PoisonError::into_inner);
        match resume_after {
            Some(last) => history.after(last),
            // A fresh stream opens with a priming event (the last id so far, and `retry`) for clients
            // of 2025-11-25 or later.
            None if primes(&session) => vec![sse::priming_event(
                &history.last_id().to_string(),
                Some(retry_ms),
            )],
            None => Vec::new(),
        }
    };
    let ended = session.mcp.session().token();
    let lease = Lease {
        session,
        rx: Some(rx),
    };
    let live = futures_util::stream::unfold(lease, |mut lease| async move {
        let message = lease.rx.as_mut()?.recv().await?;
        let event = match &lease.session.link {
            Link::Child { history, .. } => history
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(&message),
            Link::Url { .. } => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(event), lease))
    });
    let events = futures_util::stream::iter(replay.into_iter().map(Ok))
        .chain(live)
        .take_until(ended.cancelled_owned());
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_last_events_in_order() {
        let mut h = History::default();
        let m = Message::parse(Bytes::from_static(br#"{"jsonrpc":"2.0","method":"x"}"#)).unwrap();
        for _ in 0..HISTORY + 10 {
            h.record(&m);
        }
        assert_eq!(h.after(0).len(), HISTORY);
        let tail = h.after((HISTORY + 8) as u64);
        assert_eq!(tail.len(), 2);
        assert!(
            std::str::from_utf8(&tail[0])
                .unwrap()
                .starts_with(&format!("id: {}\n", HISTORY + 9))
        );
    }
}
