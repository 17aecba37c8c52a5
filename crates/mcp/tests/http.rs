//! The Streamable HTTP proxy against real server-everything instances: its own Streamable HTTP mode (URL
//! upstream) and its stdio mode started per session (command upstream). Loopback only.

mod support;

use std::ffi::OsString;

use hyper::Method;
use serde_json::{Value, json};
use support::http::{Http, server_everything_http};
use support::proxy::{self, Running};
use tessera_mcp::http::{HttpConfig, Upstream};
use tessera_mcp::upstream::child::ChildSpec;

/// A proxy with a short resume window: a dropped POST stream (2025-11-25) is given up, and its request
/// withdrawn, soon.
async fn start_proxy(upstream: Upstream) -> Running {
    let mut config = HttpConfig::new(upstream);
    config.resume_window_ms = 200;
    proxy::start_with(config, None).await
}

fn echo(id: u64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": text}}})
}

fn everything_command() -> Upstream {
    let bin = support::npm::server_everything();
    Upstream::Command(
        ChildSpec::from_command(&[OsString::from(bin), OsString::from("stdio")]).unwrap(),
    )
}

async fn session_walkthrough(p: &Running) {
    let http = &p.http;
    let (session, result) = http.initialize().await;
    assert_eq!(session.len(), 32, "the proxy's own session id: {session}");
    assert_eq!(
        result["result"]["serverInfo"]["name"],
        "mcp-servers/everything"
    );

    let tools = http
        .post(
            Some(&session),
            &json!({"jsonrpc": "2.0", "id": "t", "method": "tools/list"}),
        )
        .await;
    assert_eq!(tools.status, 200);
    assert!(
        tools.response(&json!("t"))["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo")
    );
    let reply = http.post(Some(&session), &echo(1, "hello")).await;
    assert_eq!(
        reply.response(&json!(1))["result"]["content"][0]["text"],
        "Echo: hello"
    );
    let pong = http
        .post(
            Some(&session),
            &json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
        )
        .await;
    assert_eq!(pong.response(&json!(2))["result"], json!({}));

    // Protocol version header: absent = 2025-03-26 (accepted), invalid = 400.
    let no_version = http
        .send(
            Method::POST,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("mcp-session-id", &session),
            ],
            Some(&json!({"jsonrpc": "2.0", "id": 3, "method": "ping"})),
        )
        .await;
    assert_eq!(no_version.status, 200, "{}", no_version.body);
    let bad = http
        .send(
            Method::POST,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "banana"),
            ],
            Some(&json!({"jsonrpc": "2.0", "id": 4, "method": "ping"})),
        )
        .await;
    assert_eq!(bad.status, 400);
    // Origin: foreign → 403; local → fine.
    let foreign = http
        .send(
            Method::POST,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("mcp-session-id", &session),
                ("origin", "http://evil.example"),
            ],
            Some(&json!({"jsonrpc": "2.0", "id": 5, "method": "ping"})),
        )
        .await;
    assert_eq!(foreign.status, 403);
    // Unknown session → 404; no session on a non-initialize → 400.
    assert_eq!(
        http.post(
            Some(&"0".repeat(32)),
            &json!({"jsonrpc": "2.0", "id": 6, "method": "ping"})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        http.post(None, &json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}))
            .await
            .status,
        400
    );
    // Not JSON → 400 with a parse error.
    let garbage = http
        .send(
            Method::POST,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
                ("mcp-session-id", &session),
            ],
            None,
        )
        .await;
    assert_eq!(garbage.status, 400);

    // GET opens the session's server stream.
    assert_eq!(p.proxy.sessions().registry().len(), 1);
    assert_eq!(http.delete(&session).await.status, 200);
    assert_eq!(
        http.post(
            Some(&session),
            &json!({"jsonrpc": "2.0", "id": 8, "method": "ping"})
        )
        .await
        .status,
        404
    );
    p.proxy.sessions().registry().wait_empty().await;
    assert_eq!(p.proxy.sessions().registry().pending_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_upstream_session_lifecycle() {
    let upstream = server_everything_http().await;
    let p = start_proxy(Upstream::Url(upstream.url.clone())).await;
    session_walkthrough(&p).await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_upstream_session_lifecycle() {
    let p = start_proxy(everything_command()).await;
    session_walkthrough(&p).await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_sessions_stay_isolated() {
    let upstream = server_everything_http().await;
    let p = start_proxy(Upstream::Url(upstream.url.clone())).await;
    let mut tasks = Vec::new();
    for n in 0..50u64 {
        let http = p.http.clone();
        tasks.push(tokio::spawn(async move {
            let (session, _) = http.initialize().await;
            let mut seen = Vec::new();
            for round in 0..3u64 {
                let text = format!("client {n} round {round}");
                let reply = http.post(Some(&session), &echo(round, &text)).await;
                assert_eq!(
                    reply.response(&json!(round))["result"]["content"][0]["text"],
                    format!("Echo: {text}")
                );
                seen.push(text);
            }
            (session, http)
        }));
    }
    let mut sessions = Vec::new();
    for t in tasks {
        sessions.push(t.await.unwrap());
    }
    let mut ids: Vec<&String> = sessions.iter().map(|(s, _)| s).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    assert_eq!(p.proxy.sessions().registry().len(), 50);
    for (session, http) in &sessions {
        assert_eq!(http.delete(session).await.status, 200);
    }
    p.proxy.sessions().registry().wait_empty().await;
    assert_eq!(p.proxy.sessions().registry().pending_len(), 0);
    p.finish().await;
}

async fn disconnect_mid_request(p: &Running) {
    let (session, _) = p.http.initialize().await;
    let slow = json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {
        "name": "trigger-long-running-operation", "arguments": {"duration": 30, "steps": 30}, "_meta": {"progressToken": "p"}}});
    let http = p.http.clone();
    let s = session.clone();
    let request = tokio::spawn(async move { http.post(Some(&s), &slow).await });
    p.proxy.sessions().wait_pending(|n| n == 1).await;
    request.abort();
    let _ = request.await;
    // The client is gone: its request is withdrawn.
    p.proxy.sessions().wait_no_pending().await;
    assert_eq!(p.http.delete(&session).await.status, 200);
    p.proxy.sessions().registry().wait_empty().await;
    // The map entry goes when the session's last task has dropped, which can be just after the registry
    // reports no session: `finish` checks the map after waiting for every task.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_request_leaves_nothing_behind_url() {
    let upstream = server_everything_http().await;
    let p = start_proxy(Upstream::Url(upstream.url.clone())).await;
    disconnect_mid_request(&p).await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_request_leaves_nothing_behind_command() {
    let p = start_proxy(everything_command()).await;
    disconnect_mid_request(&p).await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_requests_are_checked_then_passed_through() {
    let upstream = server_everything_http().await;
    let p = start_proxy(Upstream::Url(upstream.url.clone())).await;
    let discover = json!({"jsonrpc": "2.0", "id": "d1", "method": "server/discover", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "modern-client", "version": "1"}}}});
    let base = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    // Headers that do not mirror the body: the proxy answers 400 / -32020 itself.
    let mismatch = p
        .http
        .send(
            Method::POST,
            &[
                base[0],
                base[1],
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "server/discover"),
            ],
            Some(&discover),
        )
        .await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.messages()[0]["error"]["code"], -32020);
    let wrong_method = p
        .http
        .send(
            Method::POST,
            &[
                base[0],
                base[1],
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
            ],
            Some(&discover),
        )
        .await;
    assert_eq!(wrong_method.messages()[0]["error"]["code"], -32020);
    // A well-formed modern request needs no session and reaches the upstream — which is legacy-only, and
    // answers with its own (non-modern) 400: exactly what a dual-era client needs to see to fall back.
    let passed = p
        .http
        .send(
            Method::POST,
            &[
                base[0],
                base[1],
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "server/discover"),
            ],
            Some(&discover),
        )
        .await;
    assert_eq!(passed.status, 400, "{}", passed.body);
    assert_eq!(
        passed.messages()[0]["error"]["code"],
        -32000,
        "the upstream's own answer: {}",
        passed.body
    );
    assert!(passed.header("mcp-session-id").is_none());
    p.proxy.sessions().wait_no_pending().await;
    // The stateless traffic is grouped by client name for observability: one live group session.
    assert_eq!(p.proxy.sessions().registry().len(), 1);
    p.finish().await;
}

/// A minimal 2026-07-28 stdio server: echoes, never answers the tool `never`, and reports through the tool
/// `cancels` how many `notifications/cancelled` it received.
const STATELESS_SERVER: &str = r#"
import sys, json
cancels = 0
for line in sys.stdin:
    m = json.loads(line)
    if m.get("method") == "notifications/cancelled":
        cancels += 1
        continue
    if "id" not in m:
        continue
    params = m.get("params", {})
    name = params.get("name")
    if name == "never":
        continue
    text = str(cancels) if name == "cancels" else "Echo: " + str(params.get("arguments", {}).get("message"))
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {"resultType": "complete", "content": [{"type": "text", "text": text}]}}), flush=True)
"#;

fn modern_call(id: u64, tool: &str, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {"message": message}, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "modern", "version": "1"}}}})
}

async fn post_modern(http: &Http, body: &Value) -> support::http::Reply {
    let name = body["params"]["name"].as_str().unwrap().to_owned();
    http.send(
        Method::POST,
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", &name),
        ],
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_clients_share_one_child_with_remapped_ids() {
    let command: Vec<OsString> = ["python3", "-c", STATELESS_SERVER]
        .iter()
        .map(OsString::from)
        .collect();
    let p = start_proxy(Upstream::Command(
        ChildSpec::from_command(&command).unwrap(),
    ))
    .await;
    // Ten clients, all using id 1 at once, over one child: each gets its own answer, under its own id.
    let mut tasks = Vec::new();
    for n in 0..10 {
        let http = p.http.clone();
        tasks.push(tokio::spawn(async move {
            let reply = post_modern(&http, &modern_call(1, "echo", &format!("client {n}"))).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            assert_eq!(
                reply.response(&json!(1))["result"]["content"][0]["text"],
                format!("Echo: client {n}")
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A client that closes its stream mid-request: the request is withdrawn and the child told.
    let http = p.http.clone();
    let hanging =
        tokio::spawn(async move { post_modern(&http, &modern_call(5, "never", "")).await });
    p.proxy.sessions().wait_pending(|n| n == 1).await;
    hanging.abort();
    let _ = hanging.await;
    p.proxy.sessions().wait_no_pending().await;
    let cancels = post_modern(&p.http, &modern_call(6, "cancels", "")).await;
    assert_eq!(
        cancels.response(&json!(6))["result"]["content"][0]["text"],
        "1"
    );
    p.finish().await;
}

/// Reads SSE events (id, data) from a streaming body until `done` says so.
async fn read_events(
    body: &mut hyper::body::Incoming,
    buf: &mut String,
    mut done: impl FnMut(&[(u64, Value)]) -> bool,
) -> Vec<(u64, Value)> {
    use http_body_util::BodyExt;
    let mut events = Vec::new();
    while !done(&events) {
        let frame = body
            .frame()
            .await
            .expect("the stream goes on")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            buf.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|i| i.parse().ok());
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, serde_json::from_str(data).unwrap()));
            }
        }
    }
    events
}

async fn open_stream(
    url: &str,
    session: &str,
    last_event_id: Option<u64>,
) -> hyper::body::Incoming {
    use http_body_util::Full;
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut request = hyper::Request::get(url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session);
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last.to_string());
    }
    let response = client
        .request(request.body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.into_body()
}

fn progress(events: &[(u64, Value)]) -> Vec<u64> {
    events
        .iter()
        .filter(|(_, m)| m["method"] == "notifications/progress")
        .filter_map(|(_, m)| m["params"]["progress"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_get_stream_resumes_with_last_event_id() {
    let p = start_proxy(everything_command()).await;
    let (session, _) = p.http.initialize().await;
    let mut first = open_stream(&p.http.url, &session, None).await;
    let http = p.http.clone();
    let s = session.clone();
    let operation = tokio::spawn(async move {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "trigger-long-running-operation",
            "arguments": {"duration": 0.3, "steps": 3}, "_meta": {"progressToken": "op"}}});
        // A JSON-only client: its request's progress cannot ride on its POST, so it comes on the GET stream.
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-session-id", s.as_str()),
        ];
        http.send(hyper::Method::POST, &headers, Some(&call)).await
    });
    let mut buf = String::new();
    let seen = read_events(&mut first, &mut buf, |e| !progress(e).is_empty()).await;
    let last = seen.last().unwrap().0;
    let first_progress = progress(&seen);
    drop(first);
    let reply = operation.await.unwrap();
    assert!(
        reply.response(&json!(1))["result"].is_object(),
        "{}",
        reply.body
    );
    // Resume after the last event seen: the rest of the progress arrives, nothing seen is repeated.
    let mut second = open_stream(&p.http.url, &session, Some(last)).await;
    let mut buf = String::new();
    let rest = read_events(&mut second, &mut buf, |e| progress(e).last() == Some(&3)).await;
    assert!(rest.iter().all(|(id, _)| *id > last), "{rest:?}");
    let mut all = first_progress;
    all.extend(progress(&rest));
    assert_eq!(all, [1, 2, 3]);
    drop(second);
    assert_eq!(p.http.delete(&session).await.status, 200);
    p.finish().await;
}
