//! The stdio proxy, driven through the library, against the real server-everything and small shell servers.

mod support;

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use serde_json::{Value, json};
use support::client::LineClient;
use tessera_mcp::stdio::{self, EndedBy, StdioExit};
use tessera_mcp::upstream::child::ChildSpec;
use tessera_mcp::{McpConfig, Sessions};
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

type Client = LineClient<DuplexStream, DuplexStream>;

fn spec(command: &[&str]) -> ChildSpec {
    let command: Vec<OsString> = command.iter().map(OsString::from).collect();
    let mut spec = ChildSpec::from_command(&command).unwrap();
    spec.grace = Duration::from_millis(500);
    spec
}

fn start(sessions: &Sessions, spec: ChildSpec) -> (Client, JoinHandle<StdioExit>) {
    let (client_w, proxy_in) = tokio::io::duplex(1 << 16);
    let (proxy_out, client_r) = tokio::io::duplex(1 << 16);
    let sessions = sessions.clone();
    let proxy = tokio::spawn(async move {
        stdio::run(&sessions, &spec, proxy_in, proxy_out, None)
            .await
            .unwrap()
    });
    (LineClient::new(client_r, client_w), proxy)
}

#[allow(dead_code)]
type Halves = (ReadHalf<DuplexStream>, WriteHalf<DuplexStream>);

#[tokio::test]
async fn server_everything_through_the_proxy() {
    let bin = support::npm::server_everything();
    let sessions = Sessions::new(McpConfig::default());
    let (mut client, proxy) = start(&sessions, spec(&[bin.to_str().unwrap(), "stdio"]));

    let init = client.initialize().await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        "mcp-servers/everything"
    );
    let live = sessions.registry().sessions();
    assert_eq!(live.len(), 1);
    assert_eq!(
        live[0].state(),
        tessera_session::SessionState::Active,
        "initialize result activates the session"
    );

    // A malformed line gets a parse error and the proxy carries on.
    client.send_raw("{this is not json").await;
    let err = client.response(&Value::Null).await;
    assert_eq!(err["error"]["code"], -32700);

    let tools = client
        .request(json!("list-1"), "tools/list", json!({}))
        .await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"echo"), "{names:?}");

    let echo = client
        .request(
            json!(42),
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "hello"}}),
        )
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "Echo: hello");
    assert_eq!(echo["id"], 42);

    let pong = client.request(json!("p"), "ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));

    client.close();
    let exit = proxy.await.unwrap();
    assert_eq!(exit.ended_by, EndedBy::Client);
    assert!(
        exit.child_status.unwrap().success(),
        "server-everything exits on stdin EOF"
    );
    assert!(exit.frames >= 10);
    assert_eq!(sessions.registry().len(), 0);
    assert_eq!(sessions.registry().pending_len(), 0);
}

/// A server that answers nothing, and announces each `notifications/cancelled` for request 7 it receives.
const SILENT_SERVER: &str = r#"while IFS= read -r l; do case "$l" in *notifications/cancelled*'"requestId":7'*) echo '{"jsonrpc":"2.0","method":"test/saw-cancel-7"}';; esac; done"#;

#[tokio::test]
async fn deadline_and_limit_answer_the_client_and_cancel_upstream() {
    let mut config = McpConfig::default();
    config.pending.deadline = Duration::from_millis(300);
    config.pending.per_session = 2;
    let sessions = Sessions::new(config);
    let (mut client, proxy) = start(&sessions, spec(&["sh", "-c", SILENT_SERVER]));

    client
        .send(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {}}))
        .await;
    client
        .send(json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {}}))
        .await;
    // The third request is over the per-session limit: refused at once, with its own id.
    let refused = client.request(json!(9), "tools/call", json!({})).await;
    assert_eq!(refused["error"]["code"], -32000);
    assert_eq!(refused["error"]["data"]["scope"], "session");

    let timed_out = client.response(&json!(7)).await;
    assert_eq!(timed_out["error"]["code"], -32000);
    assert!(
        timed_out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );
    // The server got `notifications/cancelled` for request 7 (it says so), and request 8 timed out too.
    let (mut saw_cancel, mut eight) = (false, false);
    while !(saw_cancel && eight) {
        let m = client.next().await.expect("server announces the cancel");
        saw_cancel |= m["method"] == "test/saw-cancel-7";
        eight |= m["id"] == 8 && m["error"]["code"] == -32000;
    }
    assert_eq!(sessions.registry().pending_len(), 0);
    // Room again: a new request is accepted (and will time out too).
    let again = client.request(json!(10), "ping", json!({})).await;
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out")
    );

    client.close();
    let exit = proxy.await.unwrap();
    assert_eq!(exit.ended_by, EndedBy::Client);
    assert_eq!(sessions.registry().len(), 0);
}

#[tokio::test]
async fn a_server_that_ignores_eof_and_sigterm_is_killed() {
    let sessions = Sessions::new(McpConfig::default());
    let mut s = spec(&["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]);
    s.grace = Duration::from_millis(100);
    let (mut client, proxy) = start(&sessions, s);
    client.close();
    let exit = proxy.await.unwrap();
    assert_eq!(exit.child_status.unwrap().signal(), Some(9));
}

#[tokio::test]
async fn a_server_that_stops_on_sigterm_gets_sigterm() {
    let sessions = Sessions::new(McpConfig::default());
    let mut s = spec(&["sh", "-c", "while :; do sleep 1; done"]);
    s.grace = Duration::from_millis(100);
    let (mut client, proxy) = start(&sessions, s);
    client.close();
    let exit = proxy.await.unwrap();
    assert_eq!(exit.child_status.unwrap().signal(), Some(15));
}

/// Told to stop (the binary does it on SIGTERM/SIGINT) while the client stays connected, the proxy
/// shuts the child down as the spec says and ends; nothing is left of the session.
#[tokio::test]
async fn a_stopped_proxy_shuts_its_child_down() {
    let sessions = Sessions::new(McpConfig::default());
    let mut s = spec(&["sh", "-c", "while :; do sleep 1; done"]);
    s.grace = Duration::from_millis(100);
    let (client_w, proxy_in) = tokio::io::duplex(1 << 16);
    let (proxy_out, client_r) = tokio::io::duplex(1 << 16);
    let stop = tessera_session::CancellationToken::new();
    let options = stdio::StdioOptions {
        stop: Some(stop.clone()),
        ..stdio::StdioOptions::default()
    };
    let running = sessions.clone();
    let proxy = tokio::spawn(async move {
        stdio::run_with(&running, &s, proxy_in, proxy_out, options)
            .await
            .unwrap()
    });
    stop.cancel();
    let exit = tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .expect("the proxy stops")
        .unwrap();
    assert_eq!(exit.ended_by, EndedBy::Stopped);
    assert_eq!(exit.child_status.unwrap().signal(), Some(15));
    assert_eq!(sessions.registry().len(), 0);
    drop((client_w, client_r));
}

#[tokio::test]
async fn the_proxy_ends_when_the_server_exits() {
    let sessions = Sessions::new(McpConfig::default());
    let (client, proxy) = start(
        &sessions,
        spec(&[
            "sh",
            "-c",
            r#"echo '{"jsonrpc":"2.0","method":"notifications/message","params":{"x":1},"zz":[3,2,1]}'; exit 3"#,
        ]),
    );
    let exit = proxy.await.unwrap();
    assert_eq!(exit.ended_by, EndedBy::Server);
    assert_eq!(exit.child_status.unwrap().code(), Some(3));
    // What the server wrote before exiting reached the client, byte for byte.
    let mut client = client;
    let line = client.lines.next_line().await.unwrap().unwrap();
    assert_eq!(
        line,
        r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"x":1},"zz":[3,2,1]}"#
    );
    assert_eq!(sessions.registry().len(), 0);
}

/// Stress: 800 pings pipelined (written before any answer is read), with malformed lines and
/// batches among them, through the proxy to server-everything. The proxy's own replies (queued for the
/// client's sink) interleave with the forwarded answers (written straight through) without loss or
/// duplication: every ping is answered exactly once, every malformed line gets its `-32700`, every batch its
/// array; nothing stays pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_traffic_with_proxy_replies_interleaved() {
    let bin = support::npm::server_everything();
    let sessions = Sessions::new(McpConfig::default());
    let (mut client, proxy) = start(&sessions, spec(&[bin.to_str().unwrap(), "stdio"]));
    client.initialize().await;
    // Under the per-session pending limit (1000) even if the server answered nothing before the last.
    const PINGS: u64 = 800;
    let mut text = String::new();
    let (mut malformed, mut batches) = (0, 0);
    for id in 1..=PINGS {
        text.push_str(&json!({"jsonrpc": "2.0", "id": id, "method": "ping"}).to_string());
        text.push('\n');
        if id % 100 == 0 {
            text.push_str("{not json\n");
            malformed += 1;
        }
        if id % 200 == 0 {
            let (a, b) = (100_000 + id, 200_000 + id);
            text.push_str(
                &json!([{"jsonrpc": "2.0", "id": a, "method": "ping"}, {"jsonrpc": "2.0", "id": b, "method": "ping"}])
                    .to_string(),
            );
            text.push('\n');
            batches += 1;
        }
    }
    let writer = client.writer.take().unwrap();
    let feed = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut writer = writer;
        writer.write_all(text.as_bytes()).await.unwrap();
        writer.flush().await.unwrap();
        writer
    });
    let mut answered = std::collections::HashMap::<u64, u32>::new();
    let (mut parse_errors, mut arrays) = (0, 0);
    while answered.len() < PINGS as usize || parse_errors < malformed || arrays < batches {
        let m = client.next().await.expect("the proxy keeps answering");
        match &m {
            Value::Array(items) => {
                assert_eq!(items.len(), 2, "{m}");
                assert!(items.iter().all(|i| i["result"] == json!({})), "{m}");
                arrays += 1;
            }
            // The server's own notifications (list changes, logs) pass too.
            _ if m["method"].is_string() && m.get("id").is_none() => {}
            _ if m["error"]["code"] == -32700 => parse_errors += 1,
            _ if m["result"] == json!({}) => {
                *answered.entry(m["id"].as_u64().unwrap()).or_default() += 1;
            }
            _ => panic!("unexpected {m}"),
        }
    }
    assert!(answered.values().all(|&n| n == 1));
    assert_eq!((parse_errors, arrays), (malformed, batches));
    sessions.wait_no_pending().await;
    drop(feed.await.unwrap());
    let exit = proxy.await.unwrap();
    assert_eq!(exit.ended_by, EndedBy::Client);
    assert_eq!(sessions.registry().len(), 0);
}
