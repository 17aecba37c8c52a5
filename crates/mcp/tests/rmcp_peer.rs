//! The HTTP proxy in front of an rmcp 3.x server (the official Rust SDK), which serves both eras on one
//! endpoint: 2026-07-28 stateless requests and a legacy `initialize` session pass through the same proxy.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use support::http::Http;
use tessera_mcp::http::{HttpConfig, HttpProxy, Upstream};
use tessera_mcp::{McpConfig, Sessions};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, rmcp::ErrorData> {
        let schema = json!({"type": "object", "properties": {"message": {"type": "string"}}});
        let Value::Object(schema) = schema else {
            unreachable!()
        };
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "echo",
            "Echoes its message",
            schema,
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, rmcp::ErrorData> {
        let message = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("");
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("Echo: {message}"))]).into())
    }
}

async fn rmcp_server(stop: &CancellationToken) -> String {
    let service = StreamableHttpService::new(
        || Ok(Echo),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_sse_keep_alive(None)
            .with_cancellation_token(stop.child_token()),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    format!("http://{addr}/mcp")
}

fn modern(id: u64, method: &str, params: Value) -> Value {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "tessera-test", "version": "0"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

async fn post_modern(http: &Http, body: &Value, name: Option<&str>) -> support::http::Reply {
    let method = body["method"].as_str().unwrap().to_owned();
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method.as_str()),
    ];
    if let Some(name) = name {
        headers.push(("mcp-name", name));
    }
    http.send(Method::POST, &headers, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_eras_through_the_proxy_to_an_rmcp_server() {
    let stop = CancellationToken::new();
    let upstream = rmcp_server(&stop).await;
    let sessions = Sessions::new(McpConfig::default());
    let proxy = HttpProxy::new(HttpConfig::new(Upstream::Url(upstream)), sessions, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = Http::new(format!("http://{}/mcp", listener.local_addr().unwrap()));
    let (stop_proxy, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = proxy.clone();
    let server = tokio::spawn(async move {
        serving
            .serve(
                listener,
                axum::Router::new(),
                async move {
                    let _ = stopped.await;
                },
                Duration::from_secs(2),
            )
            .await
    });

    // 2026-07-28: no session; server/discover answers with the versions, through the proxy.
    let discover = post_modern(&http, &modern(1, "server/discover", json!({})), None).await;
    assert_eq!(discover.status, 200, "{}", discover.body);
    assert!(discover.header("mcp-session-id").is_none());
    let result = &discover.response(&json!(1))["result"];
    assert!(
        result["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "2026-07-28"),
        "{result}"
    );
    let call = modern(
        2,
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "modern"}}),
    );
    let reply = post_modern(&http, &call, Some("echo")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.response(&json!(2))["result"]["content"][0]["text"],
        "Echo: modern"
    );
    // Two modern clients may use the same id at once: the proxy tracks them apart.
    let call_a = modern(
        7,
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "a"}}),
    );
    let call_b = modern(
        7,
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "b"}}),
    );
    let (a, b) = tokio::join!(
        post_modern(&http, &call_a, Some("echo")),
        post_modern(&http, &call_b, Some("echo"))
    );
    assert_eq!(
        a.response(&json!(7))["result"]["content"][0]["text"],
        "Echo: a"
    );
    assert_eq!(
        b.response(&json!(7))["result"]["content"][0]["text"],
        "Echo: b"
    );
    // A wrong Mcp-Name is stopped at the proxy.
    let mismatch = post_modern(&http, &call, Some("not-echo")).await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.messages()[0]["error"]["code"], -32020);

    // The legacy era on the same endpoint: initialize opens a session mapped to rmcp's.
    let (session, init) = http.initialize().await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    let legacy = http.post(Some(&session), &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "legacy"}}})).await;
    assert_eq!(
        legacy.response(&json!(3))["result"]["content"][0]["text"],
        "Echo: legacy"
    );
    assert_eq!(http.delete(&session).await.status, 200);

    proxy.sessions().wait_no_pending().await;
    let _ = stop_proxy.send(());
    server.await.unwrap().unwrap();
    assert_eq!(proxy.sessions().registry().len(), 0);
    stop.cancel();
}
