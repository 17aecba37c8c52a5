//! A command upstream's request streams when their session ends, against a small Python stdio server
//! (`tests/support/stdio_server.rs`): a resumable POST stream (2025-11-25, a progress token) in flight ends
//! promptly, with an error event for its request, when the client DELETEs the session or the child exits.

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::http::post_stream;
use support::proxy::{Running, start};

/// Never answered by the server; its progress token makes the proxy answer with a resumable stream.
fn never_call(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "never", "arguments": {}, "_meta": {"progressToken": "p"}}})
}

/// Reads the body up to its end, which must come within 5 s.
async fn read_to_end(body: &mut hyper::body::Incoming, buf: &mut String) {
    let end = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("a frame").into_data() {
                buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), end)
        .await
        .unwrap_or_else(|_| panic!("the stream did not end; so far: {buf:?}"));
}

/// Reads until the priming event has come.
async fn primed(body: &mut hyper::body::Incoming, buf: &mut String) {
    while !buf.contains("\n\n") {
        let frame = body.frame().await.expect("the stream goes on").unwrap();
        if let Ok(data) = frame.into_data() {
            buf.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(buf.starts_with("id: 1-0\nretry: "), "{buf:?}");
}

fn messages(sse: &str) -> Vec<Value> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

async fn stream_in_flight(p: &Running) -> (String, hyper::body::Incoming, String) {
    let (session, init) = p.http.initialize().await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    let mut stream = post_stream(&p.http.url, &session, &never_call(7)).await;
    let mut buf = String::new();
    primed(&mut stream, &mut buf).await;
    p.proxy.sessions().wait_pending(|n| n == 1).await;
    (session, stream, buf)
}

async fn finish(p: Running) {
    tokio::time::timeout(Duration::from_secs(10), p.finish())
        .await
        .expect("the proxy shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_stream_ends_when_its_session_is_deleted() {
    let p = start(support::stdio_server::upstream()).await;
    let (session, mut stream, mut buf) = stream_in_flight(&p).await;
    assert_eq!(p.http.delete(&session).await.status, 200);
    read_to_end(&mut stream, &mut buf).await;
    let last = messages(&buf)
        .pop()
        .expect("an event after the priming one");
    assert_eq!(last["id"], 7, "{buf:?}");
    assert_eq!(last["error"]["code"], -32000, "{buf:?}");
    finish(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_stream_ends_when_the_child_exits() {
    let p = start(support::stdio_server::upstream()).await;
    let (session, mut stream, mut buf) = stream_in_flight(&p).await;
    let die = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "die", "arguments": {}}});
    let http = p.http.clone();
    let dying = tokio::spawn(async move { http.post(Some(&session), &die).await });
    read_to_end(&mut stream, &mut buf).await;
    let last = messages(&buf)
        .pop()
        .expect("an event after the priming one");
    assert_eq!(last["id"], 7, "{buf:?}");
    assert!(last["error"].is_object(), "{buf:?}");
    let _ = dying.await;
    finish(p).await;
}
