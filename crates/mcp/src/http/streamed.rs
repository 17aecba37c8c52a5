//! A request answered as an SSE stream by the proxy itself (stdio upstreams): the notifications routed to
//! the request (its progress) as they come, then its response, then the end of the stream. A client that
//! closes the stream drops `outcome`, and with it whatever withdraws the request. A request its client
//! cancelled (`notifications/cancelled`) gets no response: its stream just ends.

use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::{set_session_header, sse};
use crate::jsonrpc::Message;
use crate::progress::RouteGuard;

fn event(message: &Message) -> Bytes {
    sse::message_event(&message.line_safe(), None)
}

struct Streaming {
    notes: mpsc::Receiver<Message>,
    outcome: Option<Pin<Box<dyn Future<Output = Option<Message>> + Send>>>,
    _routes: Vec<RouteGuard>,
}

/// The SSE response: `notes` until `outcome` resolves, then whatever is left in `notes`, then the
/// response (none for a request the client cancelled). `routes` are removed when the stream ends.
pub(crate) fn response(
    notes: mpsc::Receiver<Message>,
    outcome: impl Future<Output = Option<Message>> + Send + 'static,
    routes: Vec<RouteGuard>,
    session: Option<tessera_session::SessionId>,
) -> Response {
    let state = Streaming {
        notes,
        outcome: Some(Box::pin(outcome)),
        _routes: routes,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let outcome = state.outcome.as_mut()?;
        tokio::select! {
            biased;
            Some(note) = state.notes.recv() => Some((Ok::<Bytes, std::convert::Infallible>(event(&note)), state)),
            response = outcome => {
                state.outcome = None;
                // Notifications read from the server before its response go first, in their order.
                let mut out = BytesMut::new();
                while let Ok(note) = state.notes.try_recv() {
                    out.extend_from_slice(&event(&note));
                }
                if let Some(response) = response {
                    out.extend_from_slice(&event(&response));
                }
                Some((Ok(out.freeze()), state))
            }
        }
    });
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response();
    if let Some(id) = session {
        set_session_header(&mut response, id);
    }
    response
}
