//! DELETE: the client ends its session. The upstream session is ended too (DELETE forwarded, or the child
//! stopped), the session's pending requests are released, and the id answers 404 from then on.

use std::sync::Arc;

use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Link, MCP_PROTOCOL_VERSION, State, check_origin, error_response, version};

/// The DELETE handler.
pub(crate) async fn delete(Extract(state): Extract<Arc<State>>, headers: HeaderMap) -> Response {
    if let Err(denied) = check_origin(&headers, &state.config) {
        return denied;
    }
    if let Err(e) = version::parse(headers.get(&MCP_PROTOCOL_VERSION).map(|v| v.as_bytes())) {
        return error_response(StatusCode::BAD_REQUEST, &format!("Bad Request: {e}"));
    }
    let session = match state.find(&headers) {
        Ok(s) => s,
        Err(not_found) => return not_found,
    };
    super::post::record_request(
        &state,
        Some(session.mcp.id()),
        "DELETE",
        "/mcp",
        None,
        &headers,
    );
    // Ours first: the upstream's DELETE may hang (bounded by the control timeout), or the client give up.
    session.mcp.session().close();
    if let Link::Url { .. } = &session.link {
        crate::upstream::http::delete(&state, &session, &headers).await;
    }
    StatusCode::OK.into_response()
}
