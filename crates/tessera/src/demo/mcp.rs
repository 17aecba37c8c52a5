//! The mcp part: the Streamable HTTP proxy on loopback in front of an rmcp server (the official Rust SDK,
//! which serves both protocol generations on one endpoint), driven by a client in both eras and recorded to a
//! tape: a 2025-11-25 session (initialize, the proxy's own `Mcp-Session-Id`, tools, DELETE) and 2026-07-28
//! stateless requests (`server/discover`, a tool call checked against its `Mcp-Name` header).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tessera_mcp::http::{HttpConfig, HttpProxy, Upstream};
use tessera_mcp::tape::{Tape, TapeConfig};
use tessera_mcp::{McpConfig, Sessions};
use tokio_util::sync::CancellationToken;

/// The upstream: one tool, `echo`.
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
        let mut schema = serde_json::Map::new();
        schema.insert("type".into(), json!("object"));
        schema.insert("properties".into(), json!({"message": {"type": "string"}}));
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
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("echo: {message}"))]).into())
    }
}

/// Starts the rmcp server on 127.0.0.1 and returns its URL.
async fn upstream(stop: &CancellationToken) -> anyhow::Result<String> {
    let service = StreamableHttpService::new(
        || Ok(Echo),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_sse_keep_alive(None)
            .with_cancellation_token(stop.child_token()),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let stop = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(format!("http://{addr}/mcp"))
}

/// One HTTP reply: status, session header and the JSON-RPC messages of the body (JSON or SSE).
struct Reply {
    status: u16,
    session: Option<String>,
    messages: Vec<Value>,
}

impl Reply {
    fn result(&self) -> anyhow::Result<&Value> {
        self.messages
            .iter()
            .find_map(|m| m.get("result"))
            .with_context(|| format!("no result in {:?}", self.messages))
    }
}

struct McpClient {
    http: Client<HttpConnector, Full<Bytes>>,
    url: String,
}

impl McpClient {
    async fn send(
        &self,
        method: Method,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let mut request = Request::builder()
            .method(method)
            .uri(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let response = self.http.request(request.body(Full::new(body))?).await?;
        let status = response.status().as_u16();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let bytes = response.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        let messages = if sse {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok())
                .collect()
        } else {
            serde_json::from_str(&text).into_iter().collect()
        };
        Ok(Reply {
            status,
            session,
            messages,
        })
    }

    /// A 2025-11-25 request inside `session`.
    async fn legacy(&self, session: &str, body: &Value) -> anyhow::Result<Reply> {
        let headers = [
            ("mcp-session-id", session),
            ("mcp-protocol-version", "2025-11-25"),
        ];
        self.send(Method::POST, &headers, Some(body)).await
    }

    /// A 2026-07-28 request: no session; version and capabilities in `_meta`, method and name in headers.
    async fn stateless(
        &self,
        id: u64,
        method: &str,
        mut params: Value,
        name_header: Option<&str>,
    ) -> anyhow::Result<Reply> {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "tessera-demo", "version": "1"},
        });
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut headers = vec![
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", method),
        ];
        if let Some(name) = name_header {
            headers.push(("mcp-name", name));
        }
        self.send(Method::POST, &headers, Some(&body)).await
    }
}

fn text_of(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or("?")
}

pub async fn run() -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let upstream_url = upstream(&stop).await?;
    let dir = super::work_dir("mcp")?;
    let tape_path = dir.path().join("demo.tape");
    let (tape, writer) = Tape::create(&tape_path, TapeConfig::default()).await?;
    let sessions = Sessions::new(McpConfig::default());
    let proxy = HttpProxy::new(
        HttpConfig::new(Upstream::Url(upstream_url.clone())),
        sessions,
        Some(tape),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/mcp", listener.local_addr()?);
    println!("  proxy {url} in front of an rmcp server at {upstream_url}, recording to a tape");
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
    let client = McpClient {
        http: Client::builder(TokioExecutor::new()).build_http(),
        url,
    };

    // The stateful generation: a session of the proxy's own, mapped to the upstream's.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "tessera-demo", "version": "1"}}});
    let reply = client
        .send(
            Method::POST,
            &[("mcp-protocol-version", "2025-11-25")],
            Some(&init),
        )
        .await?;
    let session = reply
        .session
        .clone()
        .context("initialize gave no Mcp-Session-Id")?;
    println!(
        "  2025-11-25: initialize -> version {}, proxy session {}…",
        reply.result()?["protocolVersion"],
        &session[..8.min(session.len())]
    );
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let reply = client.legacy(&session, &initialized).await?;
    ensure!(reply.status == 202, "initialized: HTTP {}", reply.status);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let reply = client.legacy(&session, &list).await?;
    let tools: Vec<&str> = reply.result()?["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    println!("  2025-11-25: tools/list -> {tools:?}");
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "hello through the proxy"}}});
    let reply = client.legacy(&session, &call).await?;
    println!(
        "  2025-11-25: tools/call echo -> {:?}",
        text_of(reply.result()?)
    );
    let reply = client
        .send(Method::DELETE, &[("mcp-session-id", &session)], None)
        .await?;
    ensure!(reply.status == 200, "DELETE: HTTP {}", reply.status);
    let reply = client.legacy(&session, &list).await?;
    ensure!(reply.status == 404, "after DELETE: HTTP {}", reply.status);
    println!("  2025-11-25: DELETE ends the session; the next request gets HTTP 404");

    // The stateless generation: no session at all, every request carries its version.
    let reply = client
        .stateless(4, "server/discover", json!({}), None)
        .await?;
    ensure!(
        reply.session.is_none(),
        "a 2026-07-28 reply carried a session"
    );
    println!(
        "  2026-07-28: server/discover -> supported versions {}",
        reply.result()?["supportedVersions"]
    );
    let params = json!({"name": "echo", "arguments": {"message": "stateless"}});
    let reply = client
        .stateless(5, "tools/call", params.clone(), Some("echo"))
        .await?;
    println!(
        "  2026-07-28: tools/call echo (Mcp-Name: echo) -> {:?}",
        text_of(reply.result()?)
    );
    let reply = client
        .stateless(6, "tools/call", params, Some("not-echo"))
        .await?;
    let code = reply.messages.first().map(|m| m["error"]["code"].clone());
    ensure!(
        reply.status == 400,
        "mismatched Mcp-Name: HTTP {}",
        reply.status
    );
    println!(
        "  2026-07-28: the same call with Mcp-Name: not-echo -> HTTP 400, error {}, stopped at the proxy",
        code.unwrap_or(Value::Null)
    );

    proxy.sessions().wait_no_pending().await;
    let _ = stop_proxy.send(());
    let report = server.await.context("the proxy task")??;
    let left = proxy.sessions().registry().len();
    drop(proxy);
    writer.finish().await.context("writing the tape")?;
    stop.cancel();
    let file = std::fs::File::open(&tape_path)?;
    let summary = tessera_mcp::tape::summarize(std::io::BufReader::new(file))?;
    drop(dir);
    println!("  tape ({} frames):", summary.frames);
    for line in summary.to_string().lines() {
        println!("    {line}");
    }
    println!(
        "  proxy stopped: {} session(s) finished, {} cancelled; sessions left: {left}",
        report.finished, report.cancelled
    );
    ensure!(left == 0, "{left} proxy session(s) left");
    Ok(())
}
