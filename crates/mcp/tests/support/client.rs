//! A line-oriented JSON-RPC test client over any byte streams.

#![allow(dead_code)]

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Lines};

pub struct LineClient<R, W> {
    pub writer: Option<W>,
    pub lines: Lines<BufReader<R>>,
    /// Messages read while waiting for something else.
    pub seen: Vec<Value>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> LineClient<R, W> {
    pub fn new(reader: R, writer: W) -> Self {
        LineClient {
            writer: Some(writer),
            lines: BufReader::new(reader).lines(),
            seen: Vec::new(),
        }
    }

    pub async fn send_raw(&mut self, line: &str) {
        let w = self.writer.as_mut().expect("writer open");
        w.write_all(line.as_bytes()).await.expect("write");
        w.write_all(b"\n").await.expect("write");
        w.flush().await.expect("flush");
    }

    pub async fn send(&mut self, message: Value) {
        self.send_raw(&message.to_string()).await;
    }

    pub async fn next(&mut self) -> Option<Value> {
        let line = self.lines.next_line().await.expect("read")?;
        Some(serde_json::from_str(&line).expect("the proxy writes JSON"))
    }

    /// Reads until the response with this id arrives; keeps everything else in `seen`.
    pub async fn response(&mut self, id: &Value) -> Value {
        loop {
            let m = self.next().await.expect("stream ended before the response");
            if m.get("id") == Some(id) && m.get("method").is_none() {
                return m;
            }
            self.seen.push(m);
        }
    }

    pub async fn request(&mut self, id: Value, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.response(&id).await
    }

    pub async fn initialize(&mut self) -> Value {
        let r = self
            .request(
                json!(0),
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "tessera-test", "version": "0"}}),
            )
            .await;
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        r
    }

    pub fn close(&mut self) {
        self.writer = None;
    }
}

/// `connect::run` bridging a line client (over in-memory pipes) to `url`: the client, the bridge's task
/// (its result: the frames that passed), and the sessions it runs in.
pub fn bridge(
    url: &str,
    config: tessera_mcp::McpConfig,
) -> (
    LineClient<tokio::io::DuplexStream, tokio::io::DuplexStream>,
    tokio::task::JoinHandle<u64>,
    tessera_mcp::Sessions,
) {
    let sessions = tessera_mcp::Sessions::new(config);
    let (client_w, bridge_in) = tokio::io::duplex(1 << 16);
    let (bridge_out, client_r) = tokio::io::duplex(1 << 16);
    let (s, url) = (sessions.clone(), url.to_owned());
    let bridge = tokio::spawn(async move {
        tessera_mcp::connect::run(&s, &url, bridge_in, bridge_out)
            .await
            .expect("the bridge runs")
    });
    (LineClient::new(client_r, client_w), bridge, sessions)
}
