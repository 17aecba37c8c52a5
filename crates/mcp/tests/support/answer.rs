//! A minimal Streamable HTTP upstream whose `tools/call` answers are made to order: big, small, JSON or
//! SSE, or a server request where a response should be.

#![allow(dead_code)] // each test binary uses part of the support code
use serde_json::{Value, json};

/// How the answer server below answers `tools/call`.
#[derive(Clone, Copy)]
pub enum Answer {
    /// One SSE event whose text is this many bytes, under this `Content-Type`.
    Sse(usize, &'static str),
    /// A JSON body holding a response whose text is this many bytes.
    Json(usize),
    /// A JSON body holding a `sampling/createMessage` request instead of a response.
    JsonRequest,
}

/// A Streamable HTTP server (stateless, on 127.0.0.1) that answers `initialize` and answers `tools/call`
/// as `answer` says; its URL and its task.
pub async fn answer_server(
    answer: Answer,
) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    use axum::body::{Body, Bytes};
    use axum::http::{Method, header};
    use axum::response::Response;
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::any(move |method: Method, body: Bytes| async move {
            let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let text = |size: usize| {
                json!({"jsonrpc": "2.0", "id": message["id"],
                    "result": {"content": [{"type": "text", "text": "x".repeat(size)}]}})
            };
            let (kind, body) = match (method, message["method"].as_str()) {
                (Method::POST, Some("initialize")) => (
                    "application/json",
                    json!({"jsonrpc": "2.0", "id": message["id"], "result": {
                        "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                        "serverInfo": {"name": "big", "version": "0"}}})
                    .to_string(),
                ),
                (Method::POST, Some("tools/call")) => match answer {
                    Answer::Sse(size, kind) => (kind, format!("data: {}\n\n", text(size))),
                    Answer::Json(size) => ("application/json", text(size).to_string()),
                    Answer::JsonRequest => (
                        "application/json",
                        json!({"jsonrpc": "2.0", "id": 77, "method": "sampling/createMessage",
                            "params": {"messages": [], "maxTokens": 1}})
                        .to_string(),
                    ),
                },
                _ => {
                    return Response::builder()
                        .status(if message.is_null() { 405 } else { 202 })
                        .body(Body::empty())
                        .unwrap();
                }
            };
            Response::builder()
                .header(header::CONTENT_TYPE, kind)
                .body(Body::from(body))
                .unwrap()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    (
        url,
        tokio::spawn(async move { axum::serve(listener, app).await }),
    )
}
