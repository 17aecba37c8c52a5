//! Deadlines and timeouts in front of a URL upstream that hangs (`tests/support/hung.rs`): a request whose
//! upstream never sends a response head is answered at its deadline (and the upstream gets
//! `notifications/cancelled`); DELETE ends an exchange still waiting for its head at once; and cancels and
//! DELETEs the upstream never answers do not hold DELETE or shutdown.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::proxy::{Running, start_full};
use tessera_mcp::McpConfig;
use tessera_mcp::http::{HttpConfig, Upstream};

async fn proxy(url: &str, deadline: Duration) -> Running {
    let mut config = HttpConfig::new(Upstream::Url(url.to_owned()));
    config.control_timeout_ms = 300;
    let mut mcp = McpConfig::default();
    mcp.pending.deadline = deadline;
    start_full(config, mcp, None).await
}

fn call(id: u64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
}

async fn finish(p: Running) {
    tokio::time::timeout(Duration::from_secs(5), p.finish())
        .await
        .expect("shutdown does not wait on the hung upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_response_head_is_answered_at_its_deadline() {
    let (url, seen, server) = support::hung::serve().await;
    let p = proxy(&url, Duration::from_millis(300)).await;
    let (session, _) = p.http.initialize().await;
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        p.http.post(Some(&session), &call(4, "never")),
    )
    .await
    .expect("answered at the deadline");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let error = reply.response(&json!(4));
    assert_eq!(error["error"]["code"], -32000, "{}", reply.body);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{}",
        reply.body
    );
    // The upstream is told (and never answers the cancel: shutdown does not wait for it).
    seen.wait_for(|e| e["method"] == "notifications/cancelled" && e["request"] == 4)
        .await;
    p.proxy.sessions().wait_no_pending().await;
    assert_eq!(
        p.http.post(Some(&session), &call(5, "echo")).await.status,
        200
    );
    finish(p).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ends_an_exchange_waiting_for_its_head_and_a_hung_upstream_delete() {
    let (url, seen, server) = support::hung::serve().await;
    let p = proxy(&url, Duration::from_secs(60)).await;
    let (session, _) = p.http.initialize().await;
    let (http, s) = (p.http.clone(), session.clone());
    let waiting = tokio::spawn(async move { http.post(Some(&s), &call(4, "never")).await });
    seen.wait_for(|e| e["method"] == "tools/call").await;
    let deleted = tokio::time::timeout(Duration::from_secs(5), p.http.delete(&session))
        .await
        .expect("DELETE does not wait on the hung upstream");
    assert_eq!(deleted.status, 200);
    let reply = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the exchange ends with its session")
        .unwrap();
    assert_eq!(reply.status, 404, "{}", reply.body);
    seen.wait_for(|e| e["method"] == "DELETE").await;
    finish(p).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_the_upstream_never_answers_does_not_hold_shutdown() {
    let (url, seen, server) = support::hung::serve().await;
    let p = proxy(&url, Duration::from_millis(300)).await;
    let (session, _) = p.http.initialize().await;
    // An SSE answer that never ends: the relay's deadline sends the cancel, which hangs upstream.
    let reply = p.http.post(Some(&session), &call(6, "stream")).await;
    let error = reply.response(&json!(6));
    assert_eq!(error["error"]["code"], -32000, "{}", reply.body);
    seen.wait_for(|e| e["method"] == "notifications/cancelled" && e["request"] == 6)
        .await;
    finish(p).await;
    server.abort();
}
