//! POST: one JSON-RPC message per request. Checks, then hands the message to the session's upstream link.
//!
//! * `Origin` not local → 403; `MCP-Protocol-Version` invalid → 400 (absent = 2025-03-26, unknown future
//!   versions pass through); a body that is not JSON → 400 with `-32700`. A stateless request's version is
//!   in its `_meta` and is the upstream's to accept or refuse; a request sent with a 2026-07-28 header but
//!   no `_meta` version → 400 `-32602`. Errors the proxy writes answer the request by its id.
//! * No `Mcp-Session-Id` and an `initialize` request → a new session (its id is returned with the result).
//! * An unknown or ended session → 404; no session id on any other message → 400.
//! * Notifications and responses → 202; requests → the response as JSON or SSE, whichever the client accepts.
//! * A JSON-RPC batch (2025-03-26) in a session → split and answered per element ([`super::batch`]).

use std::sync::Arc;

use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

use super::{
    Accept, HttpSession, Link, MCP_PROTOCOL_VERSION, State, check_origin, error_response,
    json_response, version,
};
use crate::jsonrpc::{INVALID_PARAMS, Kind, Message, PROXY_ERROR};

/// A 4xx whose JSON-RPC error answers the request by its id (null for a notification or a batch).
fn reply_error(status: StatusCode, message: &Message, code: i32, text: &str) -> Response {
    let id = message.id().filter(|_| message.is_request());
    json_response(status, &Message::error_reply(id, code, text), None)
}

/// The POST handler.
pub(crate) async fn post(
    Extract(state): Extract<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = check_origin(&headers, &state.config) {
        return denied;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type: Content-Type must be application/json",
        );
    }
    let accept = Accept::from_headers(&headers);
    let message = match Message::parse(body) {
        Ok(m) => m,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &e.reply(), None),
    };
    let has_session = headers.contains_key(&super::MCP_SESSION_ID);
    // A stateless (2026-07-28) request says its version in `_meta`; the header must mirror it, and a
    // version the upstream does not support is the upstream's to refuse (-32022 with the versions it has).
    let claim = if has_session {
        None
    } else {
        super::stateless::claim(&message)
    };
    let header_version = version::parse(headers.get(&MCP_PROTOCOL_VERSION).map(|v| v.as_bytes()));
    match (&claim, &header_version) {
        (None, Err(e)) => {
            return reply_error(
                StatusCode::BAD_REQUEST,
                &message,
                PROXY_ERROR,
                &format!("Bad Request: {e}"),
            );
        }
        (None, Ok(v)) if v.is_stateless() && !has_session && message.is_request() => {
            // A 2026-07-28 request whose `_meta` lacks the version (or `_meta` itself): invalid params.
            return reply_error(
                StatusCode::BAD_REQUEST,
                &message,
                INVALID_PARAMS,
                "Invalid params: _meta must carry io.modelcontextprotocol/protocolVersion and clientCapabilities",
            );
        }
        _ => {}
    }
    let is_batch = matches!(message.kind(), Kind::Batch);
    if is_batch && !headers.contains_key(&super::MCP_SESSION_ID) {
        // Batches belong to 2025-03-26 sessions: not to `initialize`, nor to the stateless revision.
        return error_response(
            StatusCode::BAD_REQUEST,
            "Bad Request: a JSON-RPC batch needs an Mcp-Session-Id (and may not carry initialize)",
        );
    }
    if message.is_request() && !(accept.json || accept.sse) {
        return error_response(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: accept application/json or text/event-stream",
        );
    }
    let authenticated = headers.contains_key(header::AUTHORIZATION);
    if !has_session {
        // The era is decided from the body: a `_meta` version claim is 2026-07-28, `initialize` a session.
        if let Some(claim) = claim {
            record_headers(&state, None, &message, &headers);
            if let Some(blocked) = super::intercept::client(&state, None, &message, accept) {
                return blocked;
            }
            return super::stateless::post(&state, &headers, message, claim).await;
        }
        if message.method() == Some("initialize") {
            return start_session(&state, &headers, message, accept, authenticated).await;
        }
        return error_response(
            StatusCode::BAD_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        );
    }
    let session = match state.find(&headers) {
        Ok(s) => s,
        Err(not_found) => return not_found,
    };
    if authenticated {
        session.mcp.set_authenticated();
    }
    record_headers(&state, Some(session.mcp.id()), &message, &headers);
    if is_batch {
        return super::batch::post(&state, &session, &headers, message, accept).await;
    }
    forward(&state, &session, &headers, message, accept, false).await
}

/// Records the request's headers in the tape (redacted there), ahead of the frame they carried.
pub(crate) fn record_headers(
    state: &State,
    session: Option<tessera_session::SessionId>,
    message: &Message,
    headers: &HeaderMap,
) {
    record_request(state, session, "POST", "/mcp", Some(message), headers);
}

/// Records an HTTP request's headers in the tape (redacted there).
pub(crate) fn record_request(
    state: &State,
    session: Option<tessera_session::SessionId>,
    http_method: &str,
    path: &str,
    message: Option<&Message>,
    headers: &HeaderMap,
) {
    if let Some(tape) = &state.tape {
        let pairs = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
        tape.http_request(session, http_method, path, message, pairs);
    }
}

/// One message for the session's upstream link.
pub(crate) async fn forward(
    state: &Arc<State>,
    session: &Arc<HttpSession>,
    headers: &HeaderMap,
    message: Message,
    accept: Accept,
    new_session: bool,
) -> Response {
    if let Some(blocked) = super::intercept::client(state, Some(&session.mcp), &message, accept) {
        if new_session {
            // No session without a successful initialize.
            session.mcp.session().close();
        }
        return blocked;
    }
    match &session.link {
        Link::Child { input, .. } => {
            super::command::post(state, session, input, message, accept, new_session).await
        }
        Link::Url { .. } => {
            crate::upstream::http::post(state, session, headers, message, new_session, None).await
        }
    }
}

/// `initialize` without a session: create the session and its upstream link, then forward.
async fn start_session(
    state: &Arc<State>,
    headers: &HeaderMap,
    message: Message,
    accept: Accept,
    authenticated: bool,
) -> Response {
    let (guard, mcp) = match state.sessions.create("mcp-http") {
        Ok(s) => s,
        Err(e) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("Service Unavailable: {e}"),
            );
        }
    };
    if authenticated {
        mcp.set_authenticated();
    }
    if let Some(tape) = &state.tape {
        tape.session_started(mcp.id(), "streamable-http");
    }
    record_headers(state, Some(mcp.id()), &message, headers);
    let session = match &state.config.upstream {
        super::Upstream::Command(spec) => match super::command::start(state, &guard, mcp, spec) {
            Ok(s) => s,
            Err(e) => return error_response(StatusCode::BAD_GATEWAY, &format!("Bad Gateway: {e}")),
        },
        super::Upstream::Url(_) => Arc::new(HttpSession {
            mcp,
            link: Link::Url {
                upstream_id: Default::default(),
                legacy: None,
            },
        }),
    };
    if let Err(e) = state.register(guard, session.clone()) {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Service Unavailable: {e}"),
        );
    }
    let response = forward(state, &session, headers, message, accept, true).await;
    if !response.status().is_success() {
        // No session without a successful initialize.
        session.mcp.session().close();
    }
    response
}
