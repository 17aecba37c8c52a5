//! SSE priming (2025-11-25) on a command upstream's GET stream, with server-everything per session: a
//! 2025-11-25 session's stream opens with an event that has an id, `retry` and no data, and a client that
//! reconnects with that id gets what the server sent meanwhile; a 2025-06-18 session gets no priming event.
//! A POST response stream (a request with a progress token) broken mid-way is resumed with GET and
//! `Last-Event-ID` and delivers exactly the rest, response included.

mod support;

use std::ffi::OsString;

use http_body_util::{BodyExt, Full};
use hyper::Method;
use serde_json::{Value, json};
use support::http::post_stream;
use support::proxy::{Running, start};
use tessera_mcp::http::Upstream;
use tessera_mcp::upstream::child::ChildSpec;

async fn initialize(p: &Running, version: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "priming-test", "version": "0"}}});
    let reply = p.http.post(None, &init).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.response(&json!(0))["result"]["protocolVersion"],
        version
    );
    let session = reply.header("mcp-session-id").unwrap().to_owned();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(p.http.post(Some(&session), &note).await.status, 202);
    session
}

async fn open(url: &str, session: &str, last: Option<&str>) -> hyper::body::Incoming {
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut request = hyper::Request::get(url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session);
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    let response = client
        .request(request.body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.into_body()
}

/// The next complete SSE event block (without its blank line).
async fn next_block(body: &mut hyper::body::Incoming, buf: &mut String) -> String {
    loop {
        if let Some(end) = buf.find("\n\n") {
            return buf
                .drain(..end + 2)
                .collect::<String>()
                .trim_end()
                .to_owned();
        }
        let frame = body.frame().await.expect("the stream goes on").unwrap();
        if let Ok(data) = frame.into_data() {
            buf.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

/// A long-running call from a JSON-only client: its progress comes on the GET stream.
async fn slow_call(p: &Running, session: &str) -> support::http::Reply {
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "trigger-long-running-operation",
        "arguments": {"duration": 0.2, "steps": 2}, "_meta": {"progressToken": "op"}}});
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("mcp-protocol-version", "2025-11-25"),
        ("mcp-session-id", session),
    ];
    p.http.send(Method::POST, &headers, Some(&call)).await
}

fn data(block: &str) -> Value {
    let line = block
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    serde_json::from_str(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_stream_is_primed_for_2025_11_25_and_resumes_from_the_priming_id() {
    let bin = support::npm::server_everything();
    let p = start(Upstream::Command(
        ChildSpec::from_command(&[OsString::from(bin), OsString::from("stdio")]).unwrap(),
    ))
    .await;

    let session = initialize(&p, "2025-11-25").await;
    let mut stream = open(&p.http.url, &session, None).await;
    let mut buf = String::new();
    let primed = next_block(&mut stream, &mut buf).await;
    assert_eq!(primed, "id: 0\nretry: 3000\ndata:");
    drop(stream);
    // While no stream is open, the server's progress waits; reconnecting after the priming id gets it.
    let reply = slow_call(&p, &session).await;
    assert!(
        reply.response(&json!(1))["result"].is_object(),
        "{}",
        reply.body
    );
    let mut resumed = open(&p.http.url, &session, Some("0")).await;
    let mut buf = String::new();
    let first = next_block(&mut resumed, &mut buf).await;
    assert!(first.starts_with("id: 1\n"), "{first}");
    assert_eq!(data(&first)["jsonrpc"], "2.0");
    drop(resumed);
    assert_eq!(p.http.delete(&session).await.status, 200);

    // A 2025-06-18 session: the first event on its stream is a message, not a priming event.
    let old = initialize(&p, "2025-06-18").await;
    let mut stream = open(&p.http.url, &old, None).await;
    let call = slow_call(&p, &old);
    let mut buf = String::new();
    let (first, reply) = tokio::join!(next_block(&mut stream, &mut buf), call);
    assert!(
        reply.response(&json!(1))["result"].is_object(),
        "{}",
        reply.body
    );
    assert!(first.starts_with("id: 1\n"), "{first}");
    assert_eq!(
        data(&first)["jsonrpc"],
        "2.0",
        "a message, not a priming event"
    );
    drop(stream);
    assert_eq!(p.http.delete(&old).await.status, 200);
    p.proxy.sessions().registry().wait_empty().await;
    p.finish().await;
}

fn event_id(block: &str) -> &str {
    block.lines().find_map(|l| l.strip_prefix("id: ")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_post_stream_resumes_with_last_event_id() {
    let bin = support::npm::server_everything();
    let p = start(Upstream::Command(
        ChildSpec::from_command(&[OsString::from(bin), OsString::from("stdio")]).unwrap(),
    ))
    .await;
    let session = initialize(&p, "2025-11-25").await;
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "trigger-long-running-operation",
        "arguments": {"duration": 0.6, "steps": 3}, "_meta": {"progressToken": "op"}}});
    let mut stream = post_stream(&p.http.url, &session, &call).await;
    let mut buf = String::new();
    let primed = next_block(&mut stream, &mut buf).await;
    assert_eq!(primed, "id: 1-0\nretry: 3000\ndata:");
    let first = next_block(&mut stream, &mut buf).await;
    assert_eq!(event_id(&first), "1-1");
    assert_eq!(data(&first)["params"]["progress"], 1);
    // The connection breaks; the request goes on, and the client comes back for the rest.
    drop(stream);
    let mut resumed = open(&p.http.url, &session, Some("1-1")).await;
    let mut buf = String::new();
    let mut rest = Vec::new();
    loop {
        let block = next_block(&mut resumed, &mut buf).await;
        let message = data(&block);
        rest.push((event_id(&block).to_owned(), message.clone()));
        if message.get("id") == Some(&json!(7)) {
            break;
        }
    }
    let ids: Vec<&str> = rest.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1-2", "1-3", "1-4"], "{rest:?}");
    assert_eq!(rest[0].1["params"]["progress"], 2);
    assert_eq!(rest[1].1["params"]["progress"], 3);
    assert!(rest[2].1["result"].is_object(), "{rest:?}");
    // The stream is over: reading on ends it.
    assert!(
        resumed.frame().await.is_none(),
        "the resumed stream ends after the response"
    );
    p.proxy.sessions().wait_no_pending().await;
    // An id that names no stream of the session: 404.
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let missing = client
        .request(
            hyper::Request::get(&p.http.url)
                .header("accept", "text/event-stream")
                .header("mcp-session-id", session.as_str())
                .header("last-event-id", "99-1")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(p.http.delete(&session).await.status, 200);
    p.proxy.sessions().registry().wait_empty().await;
    p.finish().await;
}
