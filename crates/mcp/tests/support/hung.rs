//! A Streamable HTTP server on loopback that hangs where asked, and records what it was sent: for tests of
//! the proxy's deadlines and timeouts in front of a URL upstream.
//!
//! - `initialize` → a 2025-11-25 result and `Mcp-Session-Id: hung-1`;
//! - `tools/call` `never` → no response head, ever; `stream` → an SSE head and a body that never ends;
//!   anything else → an echo;
//! - `notifications/cancelled` and DELETE → recorded, then no answer, ever;
//! - another notification → 202, after `params.delay_ms` if given, or never with `params.hang`;
//! - GET → 405.
//!
//! Each message is recorded (`{"method", "id", "seq", "auth"}`, DELETE as method `DELETE`) just before it
//! is answered or left hanging.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// What the server was sent, in the order it answered (or hung).
#[derive(Clone, Default)]
pub struct Seen {
    log: Arc<Mutex<Vec<Value>>>,
    changed: Arc<Notify>,
}

impl Seen {
    fn push(&self, entry: Value) {
        self.log.lock().unwrap().push(entry);
        self.changed.notify_waiters();
    }

    pub fn all(&self) -> Vec<Value> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (at most 5 s) until some entry satisfies `found`; returns it.
    pub async fn wait_for(&self, found: impl Fn(&Value) -> bool) -> Value {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(e) = self.all().into_iter().find(&found) {
                    return e;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("not seen; seen: {:?}", self.all()))
    }
}

fn status(s: StatusCode) -> Response {
    Response::builder()
        .status(s)
        .body(Body::empty())
        .expect("response")
}

fn json_body(v: Value) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header("mcp-session-id", "hung-1")
        .body(Body::from(v.to_string()))
        .expect("response")
}

async fn serve_one(seen: Seen, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if method == Method::GET {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    if method == Method::DELETE {
        seen.push(json!({"method": "DELETE", "auth": auth}));
        return std::future::pending().await;
    }
    let m: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let record = |seen: &Seen| {
        seen.push(
            json!({"method": m["method"], "id": m["id"], "seq": m["params"]["seq"],
            "request": m["params"]["requestId"], "auth": auth}),
        );
    };
    match m["method"].as_str() {
        Some("initialize") => {
            record(&seen);
            json_body(json!({"jsonrpc": "2.0", "id": m["id"], "result": {
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                "serverInfo": {"name": "hung", "version": "0"}}}))
        }
        Some("tools/call") => {
            record(&seen);
            match m["params"]["name"].as_str() {
                Some("never") => std::future::pending().await,
                Some("stream") => {
                    let body = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
                    Response::builder()
                        .header(header::CONTENT_TYPE, "text/event-stream")
                        .body(Body::from_stream(body))
                        .expect("response")
                }
                _ => json_body(json!({"jsonrpc": "2.0", "id": m["id"], "result": {
                    "content": [{"type": "text", "text": "echo"}]}})),
            }
        }
        Some("notifications/cancelled") => {
            record(&seen);
            std::future::pending().await
        }
        _ if m.get("id").is_some() && m.get("method").is_some() => {
            record(&seen);
            json_body(json!({"jsonrpc": "2.0", "id": m["id"], "result": {}}))
        }
        _ => {
            if m["params"]["hang"] == true {
                record(&seen);
                return std::future::pending().await;
            }
            if let Some(ms) = m["params"]["delay_ms"].as_u64() {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            record(&seen);
            status(StatusCode::ACCEPTED)
        }
    }
}

/// Starts the server on a loopback port: its `/mcp` URL, what it saw, and its task.
pub async fn serve() -> (String, Seen, tokio::task::JoinHandle<std::io::Result<()>>) {
    let seen = Seen::default();
    let state = seen.clone();
    let app = Router::new().route(
        "/mcp",
        any(move |method, headers, body| serve_one(state.clone(), method, headers, body)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen, server)
}
