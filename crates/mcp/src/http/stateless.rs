//! The 2026-07-28 era over HTTP: no session on the wire; every request says its version and capabilities in
//! `params._meta`, and mirrors method and name in headers.
//!
//! * The era is decided from the body: a `_meta` version claim means stateless, `initialize` means a legacy
//!   session ([`claim`]).
//! * Checks, as an intermediary that reads the body: a missing `_meta` key → 400 `-32602`; a missing or
//!   mismatched `MCP-Protocol-Version`, `Mcp-Method` or `Mcp-Name` (base64 `=?base64?…?=` values decoded
//!   first) → 400 `-32020` HeaderMismatch ([`check`]). `Mcp-Param-*` headers pass through unchecked.
//! * A "session" for observability: requests are grouped by the `clientInfo` name in `_meta` (up to
//!   [`MAX_GROUPS`], the rest in one overflow group); each group is a runtime session that ends when idle.
//!   Requests are tracked under a proxy-unique key, since clients of one group may reuse ids; the HTTP
//!   exchange itself says which response belongs to which request.
//! * Cancellation: closing the response stream is the cancel in 2026-07-28; the relay drops its upstream
//!   exchange, which carries the cancel on to a modern upstream. A command upstream is one child shared by
//!   all stateless clients, with ids remapped ([`super::shared`]); there the cancel is said explicitly.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, Weak};

use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use tessera_session::SessionId;

use super::{HttpSession, Link, MCP_PROTOCOL_VERSION, State, error_response};
use crate::jsonrpc::{INVALID_PARAMS, Id, Message};
use crate::session::McpSession;

/// `-32020`: a standard header does not match the body.
pub const HEADER_MISMATCH: i32 = -32020;
/// Most observability groups of stateless clients.
pub const MAX_GROUPS: usize = 1024;

static MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
static MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<Meta<'a>>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    uri: Option<&'a RawValue>,
    #[serde(rename = "taskId", borrow, default)]
    task_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow, default)]
    version: Option<Cow<'a, str>>,
    #[serde(rename = "io.modelcontextprotocol/clientCapabilities", borrow, default)]
    capabilities: Option<&'a RawValue>,
    #[serde(rename = "io.modelcontextprotocol/clientInfo", default)]
    client_info: Option<ClientInfo>,
}

#[derive(Deserialize)]
struct ClientInfo {
    name: Option<String>,
}

/// What a stateless request claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `io.modelcontextprotocol/protocolVersion`.
    pub version: String,
    /// Whether `io.modelcontextprotocol/clientCapabilities` is present.
    pub has_capabilities: bool,
    /// `clientInfo.name`, for grouping.
    pub client: Option<String>,
    /// The value `Mcp-Name` must mirror, for methods that have one.
    pub name: Option<String>,
}

/// The body's era claim: `Some` when `params._meta` carries a protocol version (the stateless era).
pub fn claim(message: &Message) -> Option<Claim> {
    let params = message.params::<Params<'_>>()?;
    let meta = params.meta?;
    let version = meta.version?.into_owned();
    let as_text =
        |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok());
    let name = match message.method()? {
        "tools/call" | "prompts/get" => as_text(params.name),
        "resources/read" => as_text(params.uri),
        "tasks/get" | "tasks/update" | "tasks/cancel" => as_text(params.task_id),
        _ => None,
    };
    Some(Claim {
        version,
        has_capabilities: meta.capabilities.is_some(),
        client: meta.client_info.and_then(|c| c.name),
        name,
    })
}

/// Decodes a header value, including the `=?base64?…?=` form.
pub fn header_text(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    match text
        .strip_prefix("=?base64?")
        .and_then(|t| t.strip_suffix("?="))
    {
        Some(b64) => String::from_utf8(base64_decode(b64)?).ok(),
        None => Some(text.to_owned()),
    }
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Checks the headers against the body, as the 2026-07-28 transport requires of an intermediary.
#[allow(clippy::result_large_err)] // a handler's early answer
pub fn check(headers: &HeaderMap, message: &Message, claim: &Claim) -> Result<(), Response> {
    // The proxy's refusals answer the request by its id.
    let id = message.id().filter(|_| message.is_request());
    let refuse = |code: i32, text: &str| {
        super::json_response(
            StatusCode::BAD_REQUEST,
            &Message::error_reply(id, code, text),
            None,
        )
    };
    let mismatch = |what: &str| refuse(HEADER_MISMATCH, &format!("Header mismatch: {what}"));
    if !claim.has_capabilities {
        return Err(refuse(
            INVALID_PARAMS,
            "Invalid params: _meta is missing io.modelcontextprotocol/clientCapabilities",
        ));
    }
    let header = |name: &HeaderName| headers.get(name).and_then(|v| header_text(v.as_bytes()));
    if header(&MCP_PROTOCOL_VERSION).as_deref() != Some(claim.version.as_str()) {
        return Err(mismatch(
            "MCP-Protocol-Version must equal _meta io.modelcontextprotocol/protocolVersion",
        ));
    }
    if message.is_request() && header(&MCP_METHOD).as_deref() != message.method() {
        return Err(mismatch("Mcp-Method must equal the method"));
    }
    if let Some(name) = &claim.name
        && header(&MCP_NAME).as_deref() != Some(name.as_str())
    {
        return Err(mismatch(
            "Mcp-Name must equal the request's name, uri or taskId",
        ));
    }
    Ok(())
}

/// Removes a group from the map when its session ends — if the map still holds that session under the key
/// (a newer group's session may have replaced an ended one there).
struct Ungroup {
    state: Weak<State>,
    key: String,
    session: SessionId,
}

impl Drop for Ungroup {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            let mut groups = state.groups.lock().unwrap_or_else(PoisonError::into_inner);
            if groups
                .get(&self.key)
                .is_some_and(|m| m.id() == self.session)
            {
                groups.remove(&self.key);
            }
        }
    }
}

/// The observability group of a stateless client, created on first use.
#[allow(clippy::result_large_err)] // a handler's early answer
fn group(state: &Arc<State>, client: Option<&str>) -> Result<McpSession, Response> {
    let mut groups = state.groups.lock().unwrap_or_else(PoisonError::into_inner);
    let mut key = client
        .unwrap_or("anonymous")
        .chars()
        .take(64)
        .collect::<String>();
    if !groups.contains_key(&key) && groups.len() >= MAX_GROUPS {
        key = "(overflow)".to_owned();
    }
    if let Some(found) = groups.get(&key).filter(|m| !m.session().is_ended()) {
        return Ok(found.clone());
    }
    let (guard, mcp) = state.sessions.create("mcp-stateless").map_err(|e| {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Service Unavailable: {e}"),
        )
    })?;
    let _ = mcp.session().activate();
    let ungroup = Ungroup {
        state: Arc::downgrade(state),
        key: key.clone(),
        session: mcp.id(),
    };
    let watched = mcp.clone();
    let spawned = guard.session().clone().spawn(async move {
        let _ungroup = ungroup;
        guard.shutdown_requested().await;
        watched.wait_idle().await;
        guard.close();
    });
    if spawned.is_err() {
        return Err(error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable: shutting down",
        ));
    }
    if let Some(tape) = &state.tape {
        tape.session_started(mcp.id(), "streamable-http-stateless");
    }
    groups.insert(key, mcp.clone());
    Ok(mcp)
}

/// A stateless POST: checked, grouped, forwarded to a URL upstream under a proxy-unique key, or to the
/// shared child with a remapped id.
pub(crate) async fn post(
    state: &Arc<State>,
    headers: &HeaderMap,
    message: Message,
    claim: Claim,
) -> Response {
    if let Err(rejected) = check(headers, &message, &claim) {
        return rejected;
    }
    let mcp = match group(state, claim.client.as_deref()) {
        Ok(m) => m,
        Err(e) => return e,
    };
    if headers.contains_key(axum::http::header::AUTHORIZATION) {
        mcp.set_authenticated();
    }
    if let super::Upstream::Command(spec) = &state.config.upstream {
        let accept = super::Accept::from_headers(headers);
        return super::shared::post(state, spec, &mcp, message, accept).await;
    }
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let key = message
        .is_request()
        .then(|| Id::from_raw(&format!("\"~{}\"", NEXT.fetch_add(1, Ordering::Relaxed))))
        .flatten();
    let session = Arc::new(HttpSession {
        mcp,
        link: Link::Url {
            upstream_id: Default::default(),
            legacy: None,
        },
    });
    crate::upstream::http::post(state, &session, headers, message, false, key).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use bytes::Bytes;

    fn msg(s: &str) -> Message {
        Message::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"}}}}"#;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn era_is_decided_from_the_body() {
        let c = claim(&msg(CALL)).unwrap();
        assert_eq!(c.version, "2026-07-28");
        assert_eq!(c.client.as_deref(), Some("c"));
        assert_eq!(c.name.as_deref(), Some("echo"));
        assert!(claim(&msg(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#)).is_none());
        assert!(claim(&msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)).is_none());
    }

    #[test]
    fn headers_must_mirror_the_body() {
        let m = msg(CALL);
        let c = claim(&m).unwrap();
        let good = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ];
        assert!(check(&headers(&good), &m, &c).is_ok());
        let b64 = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?ZWNobw==?="),
        ];
        assert!(check(&headers(&b64), &m, &c).is_ok());
        for bad in [
            &[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
            ][..],
            &[("mcp-method", "tools/call"), ("mcp-name", "echo")],
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
                ("mcp-name", "echo"),
            ],
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
            ],
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "other"),
            ],
        ] {
            let r = check(&headers(bad), &m, &c).unwrap_err();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
        let no_caps = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let c = claim(&no_caps).unwrap();
        assert_eq!(
            check(&headers(&good), &no_caps, &c).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn base64_header_values() {
        assert_eq!(header_text(b"=?base64?w7xiZXI=?=").as_deref(), Some("über"));
        assert_eq!(header_text(b"plain").as_deref(), Some("plain"));
        assert_eq!(header_text(b"=?base64?!!?="), None);
    }
}
