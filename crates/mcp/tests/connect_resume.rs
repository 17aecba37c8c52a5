//! `connect` and the life of a response stream, against small Streamable HTTP servers on loopback:
//! - a 2025-11-25 server may close a POST's SSE stream after an event with an id and a `retry` (SSE polling),
//!   and the client is to GET the rest with `Last-Event-ID`: the stdio client must see every message once,
//!   response included, and nothing may stay pending;
//! - a server that never answers: at the request's deadline the client gets an error and the server
//!   `notifications/cancelled`, once.

mod support;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use serde_json::{Value, json};
use support::polling::{self, Seen};
use tessera_mcp::McpConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_response_stream_is_resumed_with_last_event_id() {
    let (url, seen, server) = polling::serve().await;

    let (mut client, bridge, sessions) = support::client::bridge(&url, McpConfig::default());
    let init = client.initialize().await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");

    let started = Instant::now();
    let reply = client
        .request(
            json!(7),
            "tools/call",
            json!({"name": "slow", "arguments": {}, "_meta": {"progressToken": "t"}}),
        )
        .await;
    assert_eq!(reply["result"]["content"][0]["text"], "done");
    // The bridge waited for the server's `retry` before reconnecting.
    assert!(
        started.elapsed() >= Duration::from_millis(polling::RETRY_MS),
        "{:?}",
        started.elapsed()
    );
    // The progress came once (on the POST stream), not again from the resumed one.
    let progress: Vec<_> = client
        .seen
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 1, "{:?}", client.seen);

    client.close();
    bridge.await.unwrap();
    let gets = seen.0.lock().unwrap().clone();
    // The server's own stream was asked for once (405), and the call's stream resumed after its last event.
    assert!(gets.contains(&String::new()), "{gets:?}");
    assert_eq!(
        gets.iter().filter(|g| !g.is_empty()).collect::<Vec<_>>(),
        ["call-2"]
    );
    assert_eq!(sessions.registry().len(), 0);
    assert_eq!(sessions.registry().pending_len(), 0);
    server.abort();
}

/// A stateful server that never answers `tools/call` (its SSE stream stays open) and records the
/// notifications it is sent.
async fn silent_server(notes: Seen, method: Method, body: Bytes) -> Response {
    if method != Method::POST {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .body(Body::empty())
            .expect("response");
    }
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match message["method"].as_str() {
        Some("initialize") => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header("mcp-session-id", "silent-1")
            .body(Body::from(
                json!({"jsonrpc": "2.0", "id": message["id"], "result": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "serverInfo": {"name": "silent", "version": "0"}}})
                .to_string(),
            ))
            .expect("response"),
        Some("tools/call") => {
            use futures_util::StreamExt as _;
            let open = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(
                "id: s-0\ndata:\n\n",
            ))])
            .chain(futures_util::stream::pending());
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(open))
                .expect("response")
        }
        Some(other) => {
            notes
                .0
                .lock()
                .unwrap()
                .push(format!("{other} {}", message["params"]));
            Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(Body::empty())
                .expect("response")
        }
        None => Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Body::empty())
            .expect("response"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_answered_and_cancelled_upstream() {
    let notes = Seen::default();
    let state = notes.clone();
    let app = Router::new().route(
        "/mcp",
        any(move |method, body| silent_server(state.clone(), method, body)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut config = McpConfig::default();
    config.pending.deadline = Duration::from_millis(300);
    let (mut client, bridge, sessions) = support::client::bridge(&url, config);
    client.initialize().await;
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(
            json!(9),
            "tools/call",
            json!({"name": "hang", "arguments": {}}),
        ),
    )
    .await
    .expect("the client was never answered");
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{reply}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The server was told, once, which request to stop.
    let cancelled = async {
        loop {
            let seen = notes.0.lock().unwrap().clone();
            if seen
                .iter()
                .any(|n| n.starts_with("notifications/cancelled"))
            {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let seen = tokio::time::timeout(Duration::from_secs(5), cancelled)
        .await
        .expect("no notifications/cancelled reached the server");
    let cancels: Vec<_> = seen
        .iter()
        .filter(|n| n.starts_with("notifications/cancelled"))
        .collect();
    assert_eq!(cancels.len(), 1, "{seen:?}");
    assert!(cancels[0].contains("\"requestId\":9"), "{seen:?}");
    assert_eq!(sessions.registry().pending_len(), 0);

    client.close();
    bridge.await.unwrap();
    assert_eq!(sessions.registry().len(), 0);
    server.abort();
}
