//! `connect` resumes response streams: a 2025-11-25 server may close a POST's SSE stream after an event with
//! an id and a `retry` (SSE polling), and the client is to GET the rest with `Last-Event-ID`. The server here
//! is a small Streamable HTTP server on loopback doing exactly that; the stdio client must see every message
//! once, response included, and nothing may stay pending.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use serde_json::{Value, json};
use support::client::LineClient;
use tessera_mcp::{McpConfig, Sessions};

/// What the server saw: the `Last-Event-ID` of every GET (empty for none).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

const RETRY_MS: u64 = 30;

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
async fn polling_server(seen: Seen, method: Method, headers: HeaderMap, body: Bytes) -> Response {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_response_stream_is_resumed_with_last_event_id() {
    let seen = Seen::default();
    let state = seen.clone();
    let app = Router::new().route(
        "/mcp",
        any(move |method, headers, body| polling_server(state.clone(), method, headers, body)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let sessions = Sessions::new(McpConfig::default());
    let (client_w, bridge_in) = tokio::io::duplex(1 << 16);
    let (bridge_out, client_r) = tokio::io::duplex(1 << 16);
    let s = sessions.clone();
    let bridge = tokio::spawn(async move {
        tessera_mcp::connect::run(&s, &url, bridge_in, bridge_out)
            .await
            .unwrap()
    });
    let mut client = LineClient::new(client_r, client_w);
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
        started.elapsed() >= Duration::from_millis(RETRY_MS),
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
