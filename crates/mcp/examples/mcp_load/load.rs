//! The two clients: one session over a child's stdio, and N concurrent sessions over Streamable HTTP. Each
//! sends `tools/call echo` one at a time per session and times every round trip.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::procs::{self, Tree};
use crate::proxies;

/// The protocol revision the clients speak (every peer knows it).
pub const VERSION: &str = "2025-11-25";

/// One measured case.
pub struct Row {
    pub path: String,
    pub proxy: String,
    pub upstream: String,
    pub sessions: usize,
    pub latencies: Vec<Duration>,
    pub wall: Duration,
    /// The proxy's own CPU time over the run (None: no proxy).
    pub cpu: Option<Duration>,
    /// The proxy's own resident kB before the sessions opened and with them open.
    pub rss_kb: Option<(u64, u64)>,
    /// The resident kB of the upstream servers the proxy started, with the sessions open.
    pub upstream_rss_kb: Option<u64>,
    /// CPU time of the upstream servers the proxy started, over the run.
    pub upstream_cpu: Option<Duration>,
    /// This process's CPU time (the load generator's clients) over the run.
    pub client_cpu: Duration,
}

impl Row {
    pub fn header() {
        println!(
            "| path | proxy | upstream | sessions | requests | req/s | p50 µs | p95 µs | p99 µs | proxy CPU µs/req |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
    }

    pub fn percentile(&self, p: f64) -> u128 {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
        sorted.get(i).map_or(0, Duration::as_micros)
    }

    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    pub fn cpu_per_request(&self) -> Option<f64> {
        self.cpu.map(|c| self.per_request(c))
    }

    /// `time` spread over the run's requests, µs.
    pub fn per_request(&self, time: Duration) -> f64 {
        time.as_micros() as f64 / self.latencies.len().max(1) as f64
    }

    pub fn print(&self) {
        let cpu = self
            .cpu_per_request()
            .map_or("—".to_owned(), |c| format!("{c:.1}"));
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {cpu} |",
            self.path,
            self.proxy,
            self.upstream,
            self.sessions,
            self.latencies.len(),
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.95),
            self.percentile(0.99),
        );
    }
}

/// What a case is called in the table.
pub struct Label<'a> {
    pub path: &'a str,
    pub proxy: &'a str,
    pub upstream: &'a str,
}

impl Label<'_> {
    fn row(&self, sessions: usize, latencies: Vec<Duration>, wall: Duration) -> Row {
        Row {
            path: self.path.to_owned(),
            proxy: self.proxy.to_owned(),
            upstream: self.upstream.to_owned(),
            sessions,
            latencies,
            wall,
            cpu: None,
            rss_kb: None,
            upstream_rss_kb: None,
            upstream_cpu: None,
            client_cpu: Duration::ZERO,
        }
    }
}

/// One session over the stdio of `command` (a server, or a proxy in front of one). `marker` names the
/// upstream's processes in the tree when `command` is a proxy (Some(None): a proxy with no child server).
pub fn stdio(
    label: Label,
    command: &[String],
    proxy: Option<Option<&str>>,
    requests: usize,
) -> Row {
    let mut child = proxies::spawn_group(
        std::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let mut call = |id: usize, body: &str, stdin: &mut std::process::ChildStdin| -> Duration {
        let start = Instant::now();
        writeln!(stdin, "{{\"jsonrpc\":\"2.0\",\"id\":{id},{body}}}").expect("write");
        stdin.flush().expect("flush");
        let want = format!("\"id\":{id}");
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).expect("read") > 0,
                "{} ended",
                label.proxy
            );
            if line.contains(&want) && !line.contains("\"method\"") {
                assert!(line.contains("\"result\""), "{}: {line}", label.proxy);
                return start.elapsed();
            }
        }
    };
    let init = format!(
        r#""method":"initialize","params":{{"protocolVersion":"{VERSION}","capabilities":{{}},"clientInfo":{{"name":"load","version":"1"}}}}"#
    );
    call(0, &init, &mut stdin);
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .expect("write");
    let echo = r#""method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"}}"#;
    // A first call outside the measurement: some proxies list the tools first.
    call(1, echo, &mut stdin);
    let tree = proxy.map(|marker| Tree::of(child.id(), marker));
    let cpu_before = tree.as_ref().map(|t| procs::cpu(&t.own));
    let upstream_before = tree.as_ref().map(|t| procs::cpu(&t.upstream));
    let client_before = procs::own_cpu();
    let start = Instant::now();
    let latencies: Vec<Duration> = (2..requests + 2)
        .map(|i| call(i, echo, &mut stdin))
        .collect();
    let wall = start.elapsed();
    let mut row = label.row(1, latencies, wall);
    row.client_cpu = procs::own_cpu().saturating_sub(client_before);
    if let (Some(tree), Some(before), Some(upstream_before)) = (&tree, cpu_before, upstream_before)
    {
        row.cpu = Some(procs::cpu(&tree.own).saturating_sub(before));
        // Only where the proxy started its upstream (a URL upstream runs elsewhere).
        row.upstream_cpu = (!tree.upstream.is_empty())
            .then(|| procs::cpu(&tree.upstream).saturating_sub(upstream_before));
        let rss = procs::rss_kb(&tree.own);
        row.rss_kb = Some((rss, rss));
        row.upstream_rss_kb = Some(procs::rss_kb(&tree.upstream));
    }
    drop(stdin);
    proxies::end_group(&mut child);
    row
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(connector)
}

async fn post(
    client: &HttpClient,
    url: &str,
    session: Option<&str>,
    body: String,
) -> (Option<String>, Bytes) {
    let mut request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", VERSION);
    if let Some(s) = session {
        request = request.header("mcp-session-id", s);
    }
    let exchange = async {
        let response = client
            .request(request.body(Full::new(Bytes::from(body))).expect("request"))
            .await
            .expect("POST");
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (session, body)
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer from {url} in 60 s"))
}

async fn open(client: &HttpClient, url: &str, name: &str) -> String {
    let init = format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{VERSION}","capabilities":{{}},"clientInfo":{{"name":"{name}","version":"1"}}}}}}"#
    );
    let (session, body) = post(client, url, None, init).await;
    let session = session.unwrap_or_else(|| {
        panic!(
            "no session id from {url}: {}",
            String::from_utf8_lossy(&body)
        )
    });
    post(
        client,
        url,
        Some(&session),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned(),
    )
    .await;
    session
}

async fn close(client: &HttpClient, url: &str, sessions: Vec<String>) {
    for session in sessions {
        let request = hyper::Request::delete(url)
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", VERSION)
            .body(Full::new(Bytes::new()))
            .expect("request");
        if let Ok(r) = client.request(request).await {
            let _ = r.into_body().collect().await;
        }
    }
}

/// `sessions` concurrent sessions against `url`, `requests` in all. `proxy`: the proxy's pid and the
/// marker of its upstream processes.
pub async fn http(
    label: Label<'_>,
    url: &str,
    proxy: Option<(u32, Option<&str>)>,
    sessions: usize,
    requests: usize,
    warmup: usize,
) -> Row {
    let client = Arc::new(client());
    let per_session = (requests / sessions).max(1);
    let rss_before = proxy.map(|(pid, marker)| procs::rss_kb(&Tree::of(pid, marker).own));
    let mut ids = Vec::new();
    for _ in 0..sessions {
        ids.push(open(&client, url, "load").await);
    }
    let echo = |i: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"hello"}}}}}}"#
        )
    };
    // `warmup` calls per session outside the measurement (ids below the timed ones' range).
    for session in &ids {
        for _ in 0..warmup {
            post(&client, url, Some(session), echo(1)).await;
        }
    }
    let tree = proxy.map(|(pid, marker)| Tree::of(pid, marker));
    let cpu_before = tree.as_ref().map(|t| procs::cpu(&t.own));
    let upstream_before = tree.as_ref().map(|t| procs::cpu(&t.upstream));
    let client_before = procs::own_cpu();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for session in ids.clone() {
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_session);
            for i in 2..per_session + 2 {
                let t = Instant::now();
                let (_, reply) = post(&client, &url, Some(&session), echo(i)).await;
                assert!(
                    reply.windows(8).any(|w| w == b"\"result\""),
                    "{}",
                    String::from_utf8_lossy(&reply)
                );
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("load task"));
    }
    let wall = start.elapsed();
    let mut row = label.row(sessions, latencies, wall);
    row.client_cpu = procs::own_cpu().saturating_sub(client_before);
    if let (Some(tree), Some(before), Some(rss_before), Some(upstream_before)) =
        (&tree, cpu_before, rss_before, upstream_before)
    {
        row.cpu = Some(procs::cpu(&tree.own).saturating_sub(before));
        // Only where the proxy started its upstream (a URL upstream runs elsewhere).
        row.upstream_cpu = (!tree.upstream.is_empty())
            .then(|| procs::cpu(&tree.upstream).saturating_sub(upstream_before));
        row.rss_kb = Some((rss_before, procs::rss_kb(&tree.own)));
        row.upstream_rss_kb = Some(procs::rss_kb(&tree.upstream));
    }
    close(&client, url, ids).await;
    row
}

/// The proxy's resident memory with `n` idle sessions open: (before, with them) in kB.
pub async fn idle_sessions(url: &str, pid: u32, n: usize) -> (u64, u64) {
    let client = client();
    let rss = || procs::rss_kb(&Tree::of(pid, None).own);
    let before = rss();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(open(&client, url, "idle").await);
    }
    let with = rss();
    close(&client, url, ids).await;
    (before, with)
}
