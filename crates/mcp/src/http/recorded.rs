//! The tape's `http_response` records: a layer over every route of the proxy that records the status and
//! headers of each answer (redacted as request headers are), under the session it belongs to — the one the
//! handler names ([`AnswerSession`]: the old transport's `GET /sse`), else the `Mcp-Session-Id` of the answer
//! (a new session) or of the request, else the old transport's `sessionId` query.

use std::sync::Arc;

use axum::extract::{Request, State as Extract};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use tessera_session::SessionId;

use super::{MCP_SESSION_ID, State};

/// The session an answer belongs to, when no header says it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnswerSession(pub(crate) SessionId);

fn session_header(headers: &HeaderMap) -> Option<SessionId> {
    headers.get(&MCP_SESSION_ID)?.to_str().ok()?.parse().ok()
}

fn session_query(query: Option<&str>) -> Option<SessionId> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("sessionId="))?
        .parse()
        .ok()
}

/// Records the answer's head in the tape, if there is one.
pub(crate) async fn record(
    Extract(state): Extract<Arc<State>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(tape) = state.tape.clone() else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let asked = session_header(request.headers()).or_else(|| session_query(request.uri().query()));
    let response = next.run(request).await;
    let session = response
        .extensions()
        .get::<AnswerSession>()
        .map(|s| s.0)
        .or_else(|| session_header(response.headers()))
        .or(asked);
    let pairs = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    tape.http_response(
        session,
        method.as_str(),
        &path,
        response.status().as_u16(),
        pairs,
    );
    response
}
