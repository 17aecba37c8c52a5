//! Small Streamable HTTP servers on loopback with behaviours the npm servers do not show: a 2025-11-25
//! server that answers `tools/call` by SSE polling.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use serde_json::{Value, json};

/// What the server saw: the `Last-Event-ID` of every GET (empty for none).
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<String>>>);

pub const RETRY_MS: u64 = 30;

fn sse(events: &[(&str, Option<Value>)], retry: bool) -> Response {
    let mut body = String::new();
    for (i, (id, data)) in events.iter().enumerate() {
        body.push_str(&format!("id: {id}\n"));
        if retry && i == 0 {
            body.push_str(&format!("retry: {RETRY_MS}\n"));
        }
        match data {
            Some(d) => body.push_str(&format!("data: {d}\n\n")),
            None => body.push_str("data:\n\n"),
        }
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from(body))
        .expect("response")
}

/// A 2025-11-25 server that answers `tools/call` by polling: the POST stream carries a priming event and a
/// progress notification, then closes; the response comes on the GET that resumes it.
pub async fn polling_server(
    seen: Seen,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let status = |s: StatusCode| {
        Response::builder()
            .status(s)
            .body(Body::empty())
            .expect("response")
    };
    if method == Method::DELETE {
        return status(StatusCode::OK);
    }
    if method == Method::GET {
        let last = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        seen.0.lock().unwrap().push(last.clone());
        let reply = json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "done"}]}});
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "t", "progress": 1}});
        return match last.as_str() {
            // No stream of the server's own.
            "" => status(StatusCode::METHOD_NOT_ALLOWED),
            "call-1" => sse(
                &[("call-2", Some(progress)), ("call-3", Some(reply))],
                false,
            ),
            "call-2" => sse(&[("call-3", Some(reply))], false),
            _ => status(StatusCode::NOT_FOUND),
        };
    }
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match message["method"].as_str() {
        Some("initialize") => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header("mcp-session-id", "polled-1")
            .body(Body::from(
                json!({"jsonrpc": "2.0", "id": message["id"], "result": {
                    "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "polling", "version": "0"}}})
                .to_string(),
            ))
            .expect("response"),
        Some("tools/call") => {
            assert_eq!(headers["mcp-session-id"], "polled-1");
            let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": "t", "progress": 1}});
            // Priming event (id, retry, empty data), the progress, and the stream closes.
            sse(&[("call-1", None), ("call-2", Some(progress))], true)
        }
        _ => status(StatusCode::ACCEPTED),
    }
}

/// Starts [`polling_server`] on a loopback port: its `/mcp` URL, what it saw, and its task.
pub async fn serve() -> (String, Seen, tokio::task::JoinHandle<std::io::Result<()>>) {
    let seen = Seen::default();
    let state = seen.clone();
    let app = Router::new().route(
        "/mcp",
        any(move |method, headers, body| polling_server(state.clone(), method, headers, body)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen, server)
}
