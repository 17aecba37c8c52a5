//! A 2026-07-28 `subscriptions/listen` over the shared stdio child stays open past the request deadline
//! (it ends with its result, or the client's cancel), against a small Python 2026 stdio server.

mod support;

use std::ffi::OsString;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tessera_mcp::McpConfig;
use tessera_mcp::http::{HttpConfig, Upstream};
use tessera_mcp::upstream::child::ChildSpec;

/// Keeps the listen open; `publish` sends a notification for it, then its result; `never` is never
/// answered.
const LISTEN_SERVER: &str = r#"
import sys, json
listen = None
def send(m):
    print(json.dumps(m), flush=True)
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m or "method" not in m:
        continue
    if m["method"] == "subscriptions/listen":
        listen = m["id"]
        continue
    name = (m.get("params") or {}).get("name")
    if name == "never":
        continue
    if name == "publish" and listen is not None:
        send({"jsonrpc": "2.0", "method": "notifications/resources/list_changed",
              "params": {"_meta": {"io.modelcontextprotocol/subscriptionId": listen}}})
        send({"jsonrpc": "2.0", "id": listen, "result": {"resultType": "complete"}})
        listen = None
    send({"jsonrpc": "2.0", "id": m["id"], "result": {"resultType": "complete", "content": [{"type": "text", "text": "ok"}]}})
"#;

fn meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "listener", "version": "1"}})
}

fn request(id: u64, method: &str, name: Option<&str>) -> hyper::Request<Full<bytes::Bytes>> {
    let mut params = json!({"_meta": meta()});
    if let Some(name) = name {
        params["name"] = json!(name);
        params["arguments"] = json!({});
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let mut builder = hyper::Request::post("/")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = name {
        builder = builder.header("mcp-name", name);
    }
    builder
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_over_the_shared_child_outlives_the_request_deadline() {
    let command: Vec<OsString> = ["python3", "-c", LISTEN_SERVER]
        .iter()
        .map(OsString::from)
        .collect();
    let config = HttpConfig::new(Upstream::Command(
        ChildSpec::from_command(&command).unwrap(),
    ));
    let mut mcp = McpConfig::default();
    mcp.pending.deadline = Duration::from_millis(300);
    let p = support::proxy::start_full(config, mcp, None).await;
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let send = |mut r: hyper::Request<Full<bytes::Bytes>>| {
        *r.uri_mut() = p.http.url.parse().unwrap();
        client.request(r)
    };
    let listen = send(request(1, "subscriptions/listen", None))
        .await
        .unwrap();
    assert_eq!(listen.status(), 200);
    // A call started after the listen times out: the listen is past the deadline too.
    let never = send(request(2, "tools/call", Some("never"))).await.unwrap();
    let never = never.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&never).contains("timed out"),
        "{never:?}"
    );
    let published = send(request(3, "tools/call", Some("publish")))
        .await
        .unwrap();
    assert_eq!(published.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), listen.into_body().collect())
        .await
        .expect("the listen ends with its result")
        .unwrap()
        .to_bytes();
    let events: Vec<Value> = String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0]["method"], "notifications/resources/list_changed",
        "{events:?}"
    );
    assert_eq!(
        events[0]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        1
    );
    assert_eq!(events[1]["id"], 1, "{events:?}");
    assert_eq!(events[1]["result"]["resultType"], "complete", "{events:?}");
    p.finish().await;
}
