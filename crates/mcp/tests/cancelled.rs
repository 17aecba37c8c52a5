//! A client's `notifications/cancelled` for its own request, over a command upstream (the Python stdio
//! server of `tests/support/stdio_server.rs`): the request's POST gets no response — an SSE stream that
//! just ends — never a 404, which would tell the client its session is gone; the session goes on.

mod support;

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

fn cancel(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id, "reason": "no"}})
}

fn call(id: u64, tool: &str, meta: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": {"message": "hi"}, "_meta": meta}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_ends_its_post_and_the_session_lives_on() {
    let p = support::proxy::start(support::stdio_server::upstream()).await;
    let (session, _) = p.http.initialize().await;

    // A plain POST (no progress token).
    let (http, s) = (p.http.clone(), session.clone());
    let waiting =
        tokio::spawn(async move { http.post(Some(&s), &call(3, "never", json!({}))).await });
    p.proxy.sessions().wait_pending(|n| n == 1).await;
    assert_eq!(p.http.post(Some(&session), &cancel(3)).await.status, 202);
    let reply = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the POST is answered")
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert!(reply.messages().is_empty(), "{}", reply.body);

    // A POST answered as a (resumable) stream: it ends without a response.
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let request = hyper::Request::post(&p.http.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-session-id", session.as_str())
        .body(Full::new(bytes::Bytes::from(
            call(5, "never", json!({"progressToken": "p"})).to_string(),
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    p.proxy.sessions().wait_pending(|n| n == 1).await;
    assert_eq!(p.http.post(Some(&session), &cancel(5)).await.status, 202);
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .expect("the stream ends")
        .unwrap()
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        !body.contains("\"id\":5"),
        "no response after a cancel: {body}"
    );

    // The session goes on, and the server saw both cancels.
    let echo = p
        .http
        .post(Some(&session), &call(6, "echo", json!({})))
        .await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    assert_eq!(
        echo.response(&json!(6))["result"]["content"][0]["text"],
        "Echo: hi"
    );
    let cancels = p
        .http
        .post(Some(&session), &call(7, "cancels", json!({})))
        .await;
    assert_eq!(
        cancels.response(&json!(7))["result"]["content"][0]["text"],
        "[3, 5]"
    );
    assert_eq!(p.http.delete(&session).await.status, 200);
    p.finish().await;
}
