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

/// A 2024-11-05 client's connection: the GET /sse stream and the endpoint it named.
struct OldClient {
    base: String,
    endpoint: String,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    body: hyper::body::Incoming,
    text: String,
}

impl OldClient {
    /// GET /sse, then the `endpoint` event.
    async fn open(url: &str) -> OldClient {
        use http_body_util::Full;
        let base = url.trim_end_matches("/mcp").to_owned();
        let client =
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
        let mut old = OldClient {
            base,
            endpoint: String::new(),
            client,
            body: response.into_body(),
            text: String::new(),
        };
        old.endpoint = old.next_data("event: endpoint").await;
        assert!(
            old.endpoint.starts_with("/message?sessionId="),
            "{}",
            old.endpoint
        );
        old
    }

    /// The data of the next event on the stream that contains `want` (events before it skipped).
    async fn next_data(&mut self, want: &str) -> String {
        use http_body_util::BodyExt;
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                if block.contains(want) {
                    return block
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .unwrap()
                        .to_owned();
                }
                continue;
            }
            let frame = self
                .body
                .frame()
                .await
                .expect("stream open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// POSTs `body` to the endpoint (with an `Authorization` header); the status.
    async fn post(&self, body: Value) -> u16 {
        use http_body_util::{BodyExt, Full};
        let request = hyper::Request::post(format!("{}{}", self.base, self.endpoint))
            .header("content-type", "application/json")
            .header("authorization", "Bearer old-secret")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        let r = self.client.request(request).await.unwrap();
        let status = r.status().as_u16();
        let _ = r.into_body().collect().await;
        status
    }

    /// initialize (2024-11-05) and notifications/initialized.
    async fn initialize(&mut self) {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}}});
        assert_eq!(self.post(init).await, 202);
        let result: Value = serde_json::from_str(&self.next_data(r#""id":1"#).await).unwrap();
        assert_eq!(result["result"]["protocolVersion"], "2024-11-05");
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(self.post(initialized).await, 202);
    }
}

/// A 2024-11-05 client: GET /sse, the `endpoint` event, then initialize and an echo call POSTed to it (with
/// an `Authorization` header), their answers read from the stream, which is then closed. Returns the endpoint.
async fn old_client(url: &str) -> String {
    let mut old = OldClient::open(url).await;
    old.initialize().await;
    assert_eq!(old.post(echo(2, "old transport")).await, 202);
    let echoed: Value = serde_json::from_str(&old.next_data(r#""id":2"#).await).unwrap();
    assert_eq!(
        echoed["result"]["content"][0]["text"],
        "Echo: old transport"
    );
    old.endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_clients_batch_passes_the_rules_element_by_element() {
    let mut config = HttpConfig::new(everything_command());
    let rules = r#"{"rules": [{"name": "no-sum", "method": "tools/call", "tool": "get-sum", "action": "block", "message": "get-sum is not allowed"}]}"#;
    config.rules =
        tessera_mcp::rules::RuleSet::new(tessera_mcp::rules::Rules::from_json(rules).unwrap());
    let p = support::proxy::start_with(config, None).await;
    let mut old = OldClient::open(&p.http.url).await;
    old.initialize().await;
    // A batch: the blocked call must not reach the server hidden among allowed ones.
    let sum = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get-sum", "arguments": {"a": 1, "b": 2}}});
    let batch = json!([echo(2, "in a batch"), sum, {"jsonrpc": "2.0", "id": 4}]);
    assert_eq!(old.post(batch).await, 202);
    // The answers come one by one, in any order.
    let mut answers = std::collections::HashMap::new();
    while answers.len() < 3 {
        let event: Value = serde_json::from_str(&old.next_data("event: message").await).unwrap();
        if let Some(id) = event["id"].as_u64() {
            answers.insert(id, event);
        }
    }
    assert_eq!(
        answers[&2]["result"]["content"][0]["text"],
        "Echo: in a batch"
    );
    let blocked = &answers[&3];
    assert!(
        blocked["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("get-sum is not allowed")),
        "{blocked}"
    );
    // The malformed element got its own error.
    assert_eq!(answers[&4]["error"]["code"], -32600, "{}", answers[&4]);
    // Over the batch limit: refused whole.
    let many: Vec<Value> = (0..300).map(|i| echo(100 + i, "x")).collect();
    assert_eq!(old.post(Value::Array(many)).await, 413);
    drop(old);
    p.proxy.sessions().registry().wait_empty().await;
    p.finish().await;
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
