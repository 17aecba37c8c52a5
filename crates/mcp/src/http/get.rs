//! GET: the session's stream of server-initiated messages (SSE). One stream at a time per session (a second
//! gets 409, as the TypeScript SDK answers); the stream ends when the session does.

use std::sync::{Arc, PoisonError};

use axum::body::Body;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{
    HttpSession, Link, MCP_PROTOCOL_VERSION, State, check_origin, error_response, sse, version,
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
    match &session.link {
        Link::Child { .. } => child_stream(session),
        Link::Url { .. } => crate::upstream::http::get(&state, &session, &headers).await,
    }
}

/// Holds the session's stream receiver while a GET is open and gives it back when the GET ends.
struct Lease {
    session: Arc<HttpSession>,
    rx: Option<mpsc::Receiver<Message>>,
    next_id: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let (Link::Child { stream, .. }, Some(rx)) = (&self.session.link, self.rx.take()) {
            *stream.lock().unwrap_or_else(PoisonError::into_inner) = Some(rx);
        }
    }
}

fn child_stream(session: Arc<HttpSession>) -> Response {
    let Link::Child { stream, .. } = &session.link else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "not a command session");
    };
    let Some(rx) = stream.lock().unwrap_or_else(PoisonError::into_inner).take() else {
        return error_response(
            StatusCode::CONFLICT,
            "Conflict: only one GET stream per session",
        );
    };
    let ended = session.mcp.session().token();
    let lease = Lease {
        session,
        rx: Some(rx),
        next_id: 0,
    };
    let events = futures_util::stream::unfold(lease, |mut lease| async move {
        let message = lease.rx.as_mut()?.recv().await?;
        lease.next_id += 1;
        let event = sse::message_event(&message.line_safe(), Some(&lease.next_id.to_string()));
        Some((Ok::<_, std::convert::Infallible>(event), lease))
    })
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
