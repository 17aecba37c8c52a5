//! The old HTTP+SSE transport (2024-11-05) for older clients, in front of server-everything: as a command
//! upstream (a child per session) and as a URL upstream (its Streamable HTTP mode, the proxy translating).

mod support;

use std::ffi::OsString;

use serde_json::{Value, json};
use support::http::server_everything_http;
use tessera_mcp::http::{HttpConfig, Upstream};
use tessera_mcp::upstream::child::ChildSpec;

fn echo(id: u64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": text}}})
}

fn everything_command() -> Upstream {
    let bin = support::npm::server_everything();
    Upstream::Command(
        ChildSpec::from_command(&[OsString::from(bin), OsString::from("stdio")]).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_http_sse_client_is_served() {
    use tessera_mcp::tape::{Tape, TapeConfig};
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mcp-old-sse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tape_path = dir.join("old.tape");
    let (tape, writer) = Tape::create(&tape_path, TapeConfig::default())
        .await
        .unwrap();
    let p =
        support::proxy::start_with(HttpConfig::new(everything_command()), Some(tape.clone())).await;
    let endpoint = old_client(&p.http.url).await;
    // Closing the stream ended the session and its child.
    p.proxy.sessions().registry().wait_empty().await;
    p.finish().await;
    drop(tape);
    writer.finish().await.unwrap();

    // The tape: both kinds of request with their headers (credentials redacted), the proxy's answers'
    // heads, and the client's frames.
    let text = std::fs::read_to_string(&tape_path).unwrap();
    assert!(!text.contains("old-secret"));
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let session = endpoint.trim_start_matches("/message?sessionId=");
    let has = |kind: &str, http: &str, path: &str| {
        records.iter().any(|r| {
            r["type"] == kind && r["http"] == http && r["path"] == path && r["session"] == session
        })
    };
    assert!(has("http", "GET", "/sse") && has("http_response", "GET", "/sse"));
    assert!(has("http", "POST", "/message") && has("http_response", "POST", "/message"));
    let echo_post = records
        .iter()
        .find(|r| r["type"] == "http" && r["path"] == "/message" && r["id"] == 2)
        .unwrap();
    assert_eq!(echo_post["headers"]["authorization"], "[REDACTED]");
    let sse_head = records
        .iter()
        .find(|r| r["type"] == "http_response" && r["path"] == "/sse")
        .unwrap();
    assert_eq!(sse_head["status"], 200);
    assert_eq!(sse_head["headers"]["content-type"], "text/event-stream");
    assert!(records.iter().any(|r| r["type"] == "frame"
        && r["dir"] == "c2s"
        && r["message"]["id"] == 2
        && r["session"] == session));
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "session" && r["transport"] == "http+sse")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 2024-11-05 client: GET /sse, the `endpoint` event, then initialize and an echo call POSTed to it (with
/// an `Authorization` header), their answers read from the stream, which is then closed. Returns the endpoint.
async fn old_client(url: &str) -> String {
    use http_body_util::{BodyExt, Full};
    let base = url.trim_end_matches("/mcp").to_owned();
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let response = client
        .request(
            hyper::Request::get(format!("{base}/sse"))
                .header("accept", "text/event-stream")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut text = String::new();
    let mut next_data = async |text: &mut String, want: &str| -> String {
        loop {
            if let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if block.contains(want) {
                    return block
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap()
                        .to_owned();
                }
                continue;
            }
            let frame = body.frame().await.expect("stream open").expect("frame");
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    let endpoint = next_data(&mut text, "event: endpoint").await;
    assert!(endpoint.starts_with("/message?sessionId="), "{endpoint}");
    let post = |body: Value| {
        let request = hyper::Request::post(format!("{base}{endpoint}"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer old-secret")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        let client = client.clone();
        async move {
            let r = client.request(request).await.unwrap();
            let status = r.status();
            let _ = r.into_body().collect().await;
            status
        }
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}}});
    assert_eq!(post(init).await, 202);
    let result: Value = serde_json::from_str(&next_data(&mut text, r#""id":1"#).await).unwrap();
    assert_eq!(result["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(
        post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await,
        202
    );
    assert_eq!(post(echo(2, "old transport")).await, 202);
    let echoed: Value = serde_json::from_str(&next_data(&mut text, r#""id":2"#).await).unwrap();
    assert_eq!(
        echoed["result"]["content"][0]["text"],
        "Echo: old transport"
    );
    drop(body);
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_http_sse_client_is_served_over_a_url_upstream() {
    // The proxy translates the old transport to server-everything's Streamable HTTP mode.
    let upstream = server_everything_http().await;
    let p = support::proxy::start(Upstream::Url(upstream.url.clone())).await;
    let endpoint = old_client(&p.http.url).await;
    assert!(endpoint.starts_with("/message?sessionId="));
    p.proxy.sessions().registry().wait_empty().await;
    p.proxy.sessions().wait_no_pending().await;
    p.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_client_gets_a_polled_answer_resumed_on_its_behalf() {
    use http_body_util::{BodyExt, Full};
    // A 2025-11-25 upstream that closes the `tools/call` stream after a priming event and a progress: the
    // old client cannot resume, so the proxy GETs the rest with `Last-Event-ID` and pours it on its stream.
    let (url, seen, server) = support::polling::serve().await;
    let p = support::proxy::start(Upstream::Url(url)).await;
    let base = p.http.url.trim_end_matches("/mcp").to_owned();
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let get = hyper::Request::get(format!("{base}/sse"))
        .header("accept", "text/event-stream")
        .body(Full::default())
        .unwrap();
    let mut body = client.request(get).await.unwrap().into_body();
    let mut text = String::new();
    // The data of every event up to (and including) the first whose block contains `want`.
    let mut until = async |text: &mut String, want: &str| -> Vec<String> {
        let mut datas = Vec::new();
        loop {
            if let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if let Some(d) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    datas.push(d.to_owned());
                }
                if block.contains(want) {
                    return datas;
                }
                continue;
            }
            let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
                .await
                .expect("the stream went quiet")
                .expect("stream open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    let endpoint = until(&mut text, "event: endpoint").await.pop().unwrap();
    let post = |body: Value| {
        let request = hyper::Request::post(format!("{base}{endpoint}"))
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        let client = client.clone();
        async move { client.request(request).await.unwrap().status() }
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}}});
    assert_eq!(post(init).await, 202);
    until(&mut text, r#""id":1"#).await;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(post(note).await, 202);
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "slow", "arguments": {}, "_meta": {"progressToken": "t"}}});
    assert_eq!(post(call).await, 202);
    let events = until(&mut text, r#""id":7"#).await;
    let messages: Vec<Value> = events
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let progress = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    assert_eq!(progress, 1, "{messages:?}");
    let reply = messages.last().unwrap();
    assert_eq!(
        reply["result"]["content"][0]["text"], "done",
        "{messages:?}"
    );
    let gets = seen.0.lock().unwrap().clone();
    assert!(gets.contains(&"call-2".to_owned()), "{gets:?}");
    drop(body);
    p.proxy.sessions().registry().wait_empty().await;
    p.finish().await;
    server.abort();
}
