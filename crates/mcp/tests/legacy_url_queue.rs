//! The old HTTP+SSE transport over a URL upstream (`tests/support/hung.rs`): a session's messages reach
//! the upstream in the order they came, through one bounded queue (429 past it), and closing the stream
//! ends the upstream's session with a DELETE that carries the client's `Authorization`.

mod support;

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use support::proxy::{Running, start_full};
use tessera_mcp::McpConfig;
use tessera_mcp::http::{HttpConfig, Upstream};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<bytes::Bytes>,
>;

struct Old {
    client: Client,
    base: String,
    endpoint: String,
    stream: Incoming,
    text: String,
}

impl Old {
    async fn open(url: &str) -> Old {
        let base = url.trim_end_matches("/mcp").to_owned();
        let client: Client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let request = hyper::Request::get(format!("{base}/sse"))
            .header("accept", "text/event-stream")
            .body(Full::default())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut old = Old {
            client,
            base,
            endpoint: String::new(),
            stream: response.into_body(),
            text: String::new(),
        };
        old.endpoint = old.next_data("event: endpoint").await;
        old
    }

    /// The data of the next event containing `want`.
    async fn next_data(&mut self, want: &str) -> String {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                if block.contains(want) {
                    let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                    return data.unwrap().to_owned();
                }
                continue;
            }
            let frame = self.stream.frame().await.expect("stream open").unwrap();
            if let Ok(data) = frame.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    async fn post(&self, body: &Value) -> hyper::Response<Incoming> {
        let request = hyper::Request::post(format!("{}{}", self.base, self.endpoint))
            .header("content-type", "application/json")
            .header("authorization", "Bearer old-secret")
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .unwrap();
        self.client.request(request).await.unwrap()
    }
}

async fn proxy(url: &str) -> Running {
    let mut config = HttpConfig::new(Upstream::Url(url.to_owned()));
    config.control_timeout_ms = 300;
    start_full(config, McpConfig::default(), None).await
}

fn note(seq: u64, extra: Value) -> Value {
    let mut params = json!({"seq": seq});
    if let Value::Object(extra) = extra {
        params.as_object_mut().unwrap().extend(extra);
    }
    json!({"jsonrpc": "2.0", "method": "notifications/message", "params": params})
}

async fn finish(p: Running) {
    tokio::time::timeout(Duration::from_secs(5), p.finish())
        .await
        .expect("the proxy shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_upstream_in_order() {
    let (url, seen, server) = support::hung::serve().await;
    let p = proxy(&url).await;
    let old = Old::open(&p.http.url).await;
    // The first is slow to be taken: none of the others may overtake it.
    for seq in 0..10 {
        let extra = if seq == 0 {
            json!({"delay_ms": 300})
        } else {
            json!({})
        };
        assert_eq!(old.post(&note(seq, extra)).await.status(), 202);
    }
    seen.wait_for(|e| e["seq"] == 9).await;
    let order: Vec<u64> = seen
        .all()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
    drop(old);
    finish(p).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_queue_is_bounded() {
    let (url, seen, server) = support::hung::serve().await;
    let p = proxy(&url).await;
    let old = Old::open(&p.http.url).await;
    // The upstream never takes the first: the rest wait in the queue until it is full.
    assert_eq!(
        old.post(&note(0, json!({"hang": true}))).await.status(),
        202
    );
    seen.wait_for(|e| e["seq"] == 0).await;
    let mut accepted = 1;
    let refused = loop {
        let response = old.post(&note(accepted, json!({}))).await;
        if response.status() != 202 {
            break response;
        }
        accepted += 1;
        assert!(accepted < 1000, "no bound");
    };
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    // One taken by the sender, 64 queued.
    assert_eq!(accepted, 65);
    drop(old);
    finish(p).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_stream_deletes_the_upstream_session_with_the_client_credentials() {
    let (url, seen, server) = support::hung::serve().await;
    let p = proxy(&url).await;
    let mut old = Old::open(&p.http.url).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05",
        "capabilities": {}, "clientInfo": {"name": "old", "version": "1"}}});
    assert_eq!(old.post(&init).await.status(), 202);
    let result: Value = serde_json::from_str(&old.next_data(r#""id":1"#).await).unwrap();
    assert!(result["result"].is_object(), "{result}");
    drop(old);
    let deleted = seen.wait_for(|e| e["method"] == "DELETE").await;
    assert_eq!(deleted["auth"], "Bearer old-secret");
    finish(p).await;
    server.abort();
}
