//! JSON-RPC batches (2025-03-26) through the HTTP proxy to real server-everything instances (its Streamable
//! HTTP mode as a URL upstream, its stdio mode as a command upstream): each element is correlated on its
//! own and the answers come back as one JSON array.

mod support;

use std::ffi::OsString;

use hyper::Method;
use serde_json::{Value, json};
use support::http::server_everything_http;
use support::proxy::{Running, start};
use tessera_mcp::http::Upstream;
use tessera_mcp::upstream::child::ChildSpec;

fn echo(id: u64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": text}}})
}

async fn post_batch(p: &Running, session: Option<&str>, body: &Value) -> support::http::Reply {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2025-03-26"),
    ];
    if let Some(s) = session {
        headers.push(("mcp-session-id", s));
    }
    p.http.send(Method::POST, &headers, Some(body)).await
}

async fn batches(p: &Running) {
    let (session, _) = p.http.initialize().await;
    let batch = json!([
        echo(1, "first"),
        {"jsonrpc": "2.0", "id": "two", "method": "ping"},
        42,
        {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
        echo(3, "third"),
    ]);
    let reply = post_batch(p, Some(&session), &batch).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let Value::Array(answers) = serde_json::from_str::<Value>(&reply.body).unwrap() else {
        panic!("not an array: {}", reply.body)
    };
    assert_eq!(answers.len(), 4, "{answers:?}");
    let by_id = |id: Value| answers.iter().find(|a| a["id"] == id).cloned().unwrap();
    assert_eq!(
        by_id(json!(1))["result"]["content"][0]["text"],
        "Echo: first"
    );
    assert_eq!(by_id(json!("two"))["result"], json!({}));
    assert_eq!(
        by_id(json!(3))["result"]["content"][0]["text"],
        "Echo: third"
    );
    assert_eq!(by_id(Value::Null)["error"]["code"], -32600);
    p.proxy.sessions().wait_no_pending().await;

    // Only notifications: 202.
    let notes = json!([{"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}]);
    assert_eq!(post_batch(p, Some(&session), &notes).await.status, 202);
    // Empty, without a session, or carrying initialize: 400.
    assert_eq!(post_batch(p, Some(&session), &json!([])).await.status, 400);
    assert_eq!(
        post_batch(p, None, &json!([echo(4, "x")])).await.status,
        400
    );
    let init = json!([{"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {}}]);
    assert_eq!(post_batch(p, Some(&session), &init).await.status, 400);

    assert_eq!(p.http.delete(&session).await.status, 200);
    p.proxy.sessions().registry().wait_empty().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_per_element_url_upstream() {
    let upstream = server_everything_http().await;
    let p = start(Upstream::Url(upstream.url.clone())).await;
    batches(&p).await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_per_element_command_upstream() {
    let bin = support::npm::server_everything();
    let p = start(Upstream::Command(
        ChildSpec::from_command(&[OsString::from(bin), OsString::from("stdio")]).unwrap(),
    ))
    .await;
    batches(&p).await;
    p.finish().await;
}
