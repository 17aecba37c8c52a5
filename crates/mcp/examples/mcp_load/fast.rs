//! The fast upstream: a minimal MCP server that answers every request at once, so that what a run measures
//! is the proxy in front of it. Two transports: newline-delimited stdio, and Streamable HTTP (JSON
//! responses, a session id from `initialize`, 202 for notifications).

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The result for a request, or None for a notification or a response.
fn answer(message: &Value) -> Option<Value> {
    let id = message.get("id")?;
    let method = message.get("method")?.as_str()?;
    let result = match method {
        "initialize" => json!({
            "protocolVersion": message.pointer("/params/protocolVersion").cloned().unwrap_or(json!("2025-11-25")),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "fast", "version": "1"}
        }),
        "tools/list" => json!({"tools": [{
            "name": "echo",
            "description": "Echoes its message",
            "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}}
        }]}),
        "tools/call" => json!({"content": [{"type": "text", "text": "ok"}]}),
        _ => json!({}),
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// Serves stdio until stdin closes.
pub fn stdio_server() {
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let Some(reply) = serde_json::from_str::<Value>(&line)
            .ok()
            .as_ref()
            .and_then(answer)
        else {
            continue;
        };
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
    }
}

async fn post(State(sessions): State<Arc<AtomicU64>>, body: axum::body::Bytes) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(reply) = answer(&message) else {
        return StatusCode::ACCEPTED.into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().expect("header"));
    if message.get("method").and_then(Value::as_str) == Some("initialize") {
        let id = sessions.fetch_add(1, Ordering::Relaxed);
        headers.insert(
            "mcp-session-id",
            format!("fast-{id}").parse().expect("header"),
        );
    }
    (headers, reply.to_string()).into_response()
}

/// Serves Streamable HTTP on 127.0.0.1:`port` at `/mcp`, on one thread, until killed.
pub fn http_server(port: u16) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let app = axum::Router::new()
            .route(
                "/mcp",
                axum::routing::post(post)
                    .delete(|| async { StatusCode::OK })
                    .get(|| async { StatusCode::METHOD_NOT_ALLOWED }),
            )
            .with_state(Arc::new(AtomicU64::new(1)));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the fast HTTP server");
        axum::serve(listener, app).await.expect("serve");
    });
}
