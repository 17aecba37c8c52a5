//! Test helpers for the HTTP proxy: a loopback HTTP client, and server-everything in Streamable HTTP mode.

#![allow(dead_code)]

use std::process::Stdio;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// POSTs `body` to session `session` (2025-11-25) and returns the body of its SSE answer (status 200 and
/// `text/event-stream` checked), to be read as it streams.
pub async fn post_stream(url: &str, session: &str, body: &Value) -> hyper::body::Incoming {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-session-id", session)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    response.into_body()
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON-RPC messages in the body: one JSON object, or the `data:` of each SSE event.
    pub fn messages(&self) -> Vec<Value> {
        if self
            .header("content-type")
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("text/event-stream"))
        {
            self.body
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(|d| serde_json::from_str(d).expect("SSE data is JSON"))
                .collect()
        } else if self.body.is_empty() {
            Vec::new()
        } else {
            vec![serde_json::from_str(&self.body).expect("body is JSON")]
        }
    }

    /// The response to request `id`.
    pub fn response(&self, id: &Value) -> Value {
        self.messages()
            .into_iter()
            .find(|m| m.get("id") == Some(id) && m.get("method").is_none())
            .unwrap_or_else(|| panic!("no response to {id} in {:?}", self.body))
    }
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    pub url: String,
}

impl Http {
    pub fn new(url: String) -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(&self.url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let response = self
            .client
            .request(builder.body(Full::new(body)).unwrap())
            .await
            .expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("HTTP body")
            .to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// POST a message with the usual headers (and a session id, if given).
    pub async fn post(&self, session: Option<&str>, body: &Value) -> Reply {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2025-11-25"),
        ];
        if let Some(s) = session {
            headers.push(("mcp-session-id", s));
        }
        self.send(Method::POST, &headers, Some(body)).await
    }

    /// initialize + notifications/initialized; returns the proxy's session id and the initialize result.
    pub async fn initialize(&self) -> (String, Value) {
        let init = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "tessera-test", "version": "0"}}});
        let reply = self.post(None, &init).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let session = reply
            .header("mcp-session-id")
            .expect("a session id")
            .to_owned();
        let result = reply.response(&serde_json::json!(0));
        let note = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(self.post(Some(&session), &note).await.status, 202);
        (session, result)
    }

    pub async fn delete(&self, session: &str) -> Reply {
        self.send(
            Method::DELETE,
            &[
                ("mcp-session-id", session),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            None,
        )
        .await
    }
}

/// server-everything in Streamable HTTP mode on a free loopback port; killed when dropped.
pub struct EverythingHttp {
    pub child: tokio::process::Child,
    pub url: String,
}

pub async fn server_everything_http() -> EverythingHttp {
    let bin = super::npm::server_everything();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(bin)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start server-everything");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("listening on port") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    EverythingHttp {
        child,
        url: format!("http://127.0.0.1:{port}/mcp"),
    }
}
