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

/// A batch's answers are held until the last one is in, within four message limits in all: the requests
/// whose answers do not fit get an error each, the others their answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batchs_answers_are_bounded_in_all() {
    let (url, server) =
        support::answer::answer_server(support::answer::Answer::Json(40 * 1024)).await;
    let mut config = tessera_mcp::http::HttpConfig::new(Upstream::Url(url));
    config.max_body = 64 * 1024;
    let p = support::proxy::start_with(config, None).await;
    let (session, _) = p.http.initialize().await;
    // Eight answers of ~40 KiB: six fit in 256 KiB.
    let batch = Value::Array((1..=8).map(|i| echo(i, "x")).collect());
    let reply = post_batch(&p, Some(&session), &batch).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let Value::Array(answers) = serde_json::from_str::<Value>(&reply.body).unwrap() else {
        panic!("not an array: {}", reply.body)
    };
    assert_eq!(answers.len(), 8);
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|a| a.get("error").is_some())
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    for error in refused {
        assert_eq!(error["error"]["code"], -32000);
        assert!(error["id"].as_u64().is_some_and(|id| (1..=8).contains(&id)));
    }
    assert_eq!(p.http.delete(&session).await.status, 200);
    p.proxy.sessions().registry().wait_empty().await;
    p.finish().await;
    server.abort();
}

type LineClient = support::client::LineClient<tokio::io::DuplexStream, tokio::io::DuplexStream>;

/// `mcp stdio` in front of `command`, recording to a tape; the client, the proxy's task, the tape's writer.
async fn stdio_proxy(
    sessions: &tessera_mcp::Sessions,
    command: &[&str],
    tape_path: &std::path::Path,
) -> (
    LineClient,
    tokio::task::JoinHandle<tessera_mcp::stdio::StdioExit>,
    tessera_mcp::tape::Tape,
    tessera_mcp::tape::TapeWriter,
) {
    use tessera_mcp::stdio::{self, StdioOptions};
    use tessera_mcp::tape::{Tape, TapeConfig};
    let (tape, writer) = Tape::create(tape_path, TapeConfig::default())
        .await
        .unwrap();
    let command: Vec<OsString> = command.iter().map(OsString::from).collect();
    let mut spec = ChildSpec::from_command(&command).unwrap();
    spec.grace = std::time::Duration::from_millis(500);
    let (client_w, proxy_in) = tokio::io::duplex(1 << 16);
    let (proxy_out, client_r) = tokio::io::duplex(1 << 16);
    let options = StdioOptions {
        tape: Some(tape.clone()),
        rules: tessera_mcp::rules::RuleSet::none(),

        ..StdioOptions::default()
    };
    let running = sessions.clone();
    let proxy = tokio::spawn(async move {
        stdio::run_with(&running, &spec, proxy_in, proxy_out, options)
            .await
            .unwrap()
    });
    (LineClient::new(client_r, client_w), proxy, tape, writer)
}

fn tape_records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Over stdio a batch is split as over HTTP: server-everything (which takes no batches) gets each element
/// as a line, and the client gets one array with every answer, the proxy's own included; the tape has a
/// frame and a correlation per element.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_on_stdio_is_split_and_answered_as_one_array() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mcp-batch-stdio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("batch.tape");
    let bin = support::npm::server_everything();
    let sessions = tessera_mcp::Sessions::new(tessera_mcp::McpConfig::default());
    let (mut client, proxy, tape, writer) =
        stdio_proxy(&sessions, &[bin.to_str().unwrap(), "stdio"], &path).await;
    client.initialize().await;

    client
        .send(json!([
            echo(1, "first"),
            {"jsonrpc": "2.0", "id": "two", "method": "ping"},
            42,
            {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
            echo(3, "third"),
        ]))
        .await;
    let answers = loop {
        match client.next().await.expect("an answer") {
            Value::Array(answers) => break answers,
            other => client.seen.push(other),
        }
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
    // A batch of notifications only: nothing comes back; the session goes on.
    client
        .send(json!([{"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}]))
        .await;
    let pong = client.request(json!(9), "ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));
    client.close();
    proxy.await.unwrap();
    assert_eq!(sessions.registry().pending_len(), 0);
    drop(tape);
    writer.finish().await.unwrap();

    let records = tape_records(&path);
    for id in [json!(1), json!("two"), json!(3)] {
        let frames: Vec<&Value> = records
            .iter()
            .filter(|r| r["type"] == "frame" && r["message"]["id"] == id)
            .collect();
        assert_eq!(frames.len(), 2, "request and response of {id}: {frames:?}");
        let response_seq = frames.iter().find(|f| f["dir"] == "s2c").unwrap()["seq"].clone();
        assert!(
            records
                .iter()
                .any(|r| r["type"] == "correlation" && r["seq"] == response_seq),
            "a correlation for {id}"
        );
    }
    assert!(!records.iter().any(|r| r["message"].is_array()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that answers nothing: batch members past their deadline are answered in the batch's array, and
/// the server gets a cancel for each.
const SILENT_SERVER: &str = r#"while IFS= read -r l; do case "$l" in *notifications/cancelled*) echo '{"jsonrpc":"2.0","method":"test/saw-cancel"}';; esac; done"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_members_past_their_deadline_are_answered_together() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mcp-batch-deadline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = tessera_mcp::McpConfig::default();
    config.pending.deadline = std::time::Duration::from_millis(300);
    let sessions = tessera_mcp::Sessions::new(config);
    let (mut client, proxy, tape, writer) =
        stdio_proxy(&sessions, &["sh", "-c", SILENT_SERVER], &dir.join("t.tape")).await;
    client
        .send(json!([
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {}},
        ]))
        .await;
    let mut cancels = 0;
    let answers = loop {
        match client.next().await.expect("an answer") {
            Value::Array(answers) => break answers,
            other if other["method"] == "test/saw-cancel" => cancels += 1,
            other => panic!("unexpected {other}"),
        }
    };
    assert_eq!(answers.len(), 2, "{answers:?}");
    for a in &answers {
        assert_eq!(a["error"]["code"], -32000, "{a}");
    }
    while cancels < 2 {
        let m = client.next().await.expect("a cancel");
        assert_eq!(m["method"], "test/saw-cancel");
        cancels += 1;
    }
    client.close();
    proxy.await.unwrap();
    assert_eq!(sessions.registry().pending_len(), 0);
    drop(tape);
    writer.finish().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
