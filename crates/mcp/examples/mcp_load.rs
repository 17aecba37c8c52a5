//! Load generator for the MCP proxy: latency (p50/p95/p99), throughput and the proxy's own CPU time per
//! request, proxied versus direct, over stdio and Streamable HTTP, in one run.
//!
//! ```text
//! cargo build --release -p tessera -p tessera-mcp --example mcp_load
//! target/release/examples/mcp_load --tessera target/release/tessera \
//!     --everything <dir>/node_modules/.bin/mcp-server-everything --requests 2000
//! ```
//!
//! Upstreams: `fast` (this binary's own minimal stdio server, which answers at once, so the proxy is what is
//! measured) and server-everything (stdio, and its Streamable HTTP mode). CPU time is the proxy process's
//! utime+stime from /proc, divided by the requests it carried.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("fast-server") {
        fast_server();
        return;
    }
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let tessera = arg("--tessera").unwrap_or_else(|| "target/release/tessera".into());
    let everything = arg("--everything");
    let requests: usize = arg("--requests")
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    // stdio is cheap per request: more of them, so CPU time (10 ms ticks) is measured to a few percent.
    let stdio_requests: usize = arg("--stdio-requests")
        .and_then(|n| n.parse().ok())
        .unwrap_or(requests * 10);
    let me = std::env::current_exe()
        .expect("own path")
        .display()
        .to_string();

    println!(
        "| path | upstream | sessions | requests | req/s | p50 µs | p95 µs | p99 µs | proxy CPU µs/req |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let fast = vec![me.clone(), "fast-server".to_owned()];
    stdio_case("stdio direct", "fast", None, &fast, stdio_requests);
    stdio_case(
        "stdio proxied",
        "fast",
        Some(&tessera),
        &fast,
        stdio_requests,
    );
    if let Some(everything) = &everything {
        let se = vec![everything.clone(), "stdio".to_owned()];
        stdio_case("stdio direct", "server-everything", None, &se, requests);
        stdio_case(
            "stdio proxied",
            "server-everything",
            Some(&tessera),
            &se,
            requests,
        );
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        // HTTP with the fast upstream behind a command (one child per session): the proxy's own cost.
        let proxy = start_serve(&tessera, &["--", &me, "fast-server"]);
        for sessions in [1, 50] {
            http_case(
                "http proxied (command)",
                "fast",
                &proxy.1,
                Some(proxy.0.id()),
                sessions,
                requests,
            )
            .await;
        }
        drop(proxy);
        if let Some(everything) = &everything {
            let port = free_port();
            let mut upstream = Command::new(everything)
                .arg("streamableHttp")
                .env("PORT", port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start server-everything");
            let mut err = BufReader::new(upstream.stderr.take().expect("stderr"));
            let mut line = String::new();
            while err.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("listening on port") {
                line.clear();
            }
            std::thread::spawn(move || for _ in err.lines() {});
            let direct = format!("http://127.0.0.1:{port}/mcp");
            let proxy = start_serve(&tessera, &["--upstream", &direct]);
            if let Some(idle) = arg("--idle-sessions").and_then(|n| n.parse::<usize>().ok()) {
                idle_sessions(&proxy.1, proxy.0.id(), idle).await;
            }
            for sessions in [1, 50] {
                http_case(
                    "http direct",
                    "server-everything",
                    &direct,
                    None,
                    sessions,
                    requests,
                )
                .await;
                http_case(
                    "http proxied (url)",
                    "server-everything",
                    &proxy.1,
                    Some(proxy.0.id()),
                    sessions,
                    requests,
                )
                .await;
            }
            drop(proxy);
            let _ = upstream.kill();
            let _ = upstream.wait();
        }
    });
}

/// A minimal MCP server on stdio: answers every request at once with an empty or echo result.
fn fast_server() {
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let (Some(id), Some(method)) = (v.get("id"), v.get("method").and_then(|m| m.as_str()))
        else {
            continue;
        };
        let result = match method {
            "initialize" => {
                serde_json::json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "fast", "version": "1"}})
            }
            "tools/call" => serde_json::json!({"content": [{"type": "text", "text": "ok"}]}),
            _ => serde_json::json!({}),
        };
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result})
        );
        let _ = out.flush();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The process's user+system CPU time, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the command name: state is field 0, utime 11, stime 12 (clock ticks, 100 Hz on Linux).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn report(
    path: &str,
    upstream: &str,
    sessions: usize,
    mut latencies: Vec<Duration>,
    wall: Duration,
    cpu: Option<Duration>,
) {
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
            .as_micros()
    };
    let n = latencies.len();
    let cpu = cpu.map_or("—".to_owned(), |c| {
        format!("{:.1}", c.as_micros() as f64 / n as f64)
    });
    println!(
        "| {path} | {upstream} | {sessions} | {n} | {:.0} | {} | {} | {} | {cpu} |",
        n as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.95),
        pct(0.99)
    );
}

fn stdio_case(path: &str, upstream: &str, proxy: Option<&str>, server: &[String], requests: usize) {
    let mut command = match proxy {
        Some(tessera) => {
            let mut c = Command::new(tessera);
            c.args(["mcp", "stdio", "--"]).args(server);
            c
        }
        None => {
            let mut c = Command::new(&server[0]);
            c.args(&server[1..]);
            c
        }
    };
    let mut child: Child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
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
                "server ended"
            );
            if line.contains(&want) && !line.contains("\"method\"") {
                return start.elapsed();
            }
        }
    };
    call(
        0,
        r#""method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"load","version":"1"}}"#,
        &mut stdin,
    );
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","method":"notifications/initialized"}}"#
    )
    .expect("write");
    let cpu_before = proxy.map(|_| cpu_time(child.id()));
    let start = Instant::now();
    let echo = r#""method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"}}"#;
    let latencies: Vec<Duration> = (1..=requests).map(|i| call(i, echo, &mut stdin)).collect();
    let wall = start.elapsed();
    let cpu = cpu_before.map(|before| cpu_time(child.id()).saturating_sub(before));
    drop(stdin);
    let _ = child.wait();
    report(path, upstream, 1, latencies, wall, cpu);
}

struct Serve(Child, String);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn start_serve(tessera: &str, upstream: &[&str]) -> Serve {
    let mut child = Command::new(tessera)
        .args([
            "mcp",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shutdown-grace",
            "1",
        ])
        .args(upstream)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tessera mcp serve");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap_or(0) > 0, "tessera exited");
        if let Some(url) = line.trim().strip_prefix("tessera mcp serve: listening on ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || for _ in err.lines() {});
    Serve(child, url)
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn post(
    client: &HttpClient,
    url: &str,
    session: Option<&str>,
    body: String,
) -> (Option<String>, Bytes) {
    let mut request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25");
    if let Some(s) = session {
        request = request.header("mcp-session-id", s);
    }
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
}

async fn http_case(
    path: &str,
    upstream: &str,
    url: &str,
    proxy_pid: Option<u32>,
    sessions: usize,
    requests: usize,
) {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(connector);
    let client = Arc::new(client);
    let per_session = (requests / sessions).max(1);
    let mut ids = Vec::new();
    for _ in 0..sessions {
        let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"load","version":"1"}}}"#;
        let (session, _) = post(&client, url, None, init.to_owned()).await;
        let session = session.expect("session id");
        post(
            &client,
            url,
            Some(&session),
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned(),
        )
        .await;
        ids.push(session);
    }
    let cpu_before = proxy_pid.map(cpu_time);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for session in ids.clone() {
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_session);
            for i in 1..=per_session {
                let body = format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"hello"}}}}}}"#);
                let t = Instant::now();
                let (_, reply) = post(&client, &url, Some(&session), body).await;
                assert!(reply.windows(8).any(|w| w == b"\"result\""), "{}", String::from_utf8_lossy(&reply));
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
    let cpu = proxy_pid
        .zip(cpu_before)
        .map(|(pid, before)| cpu_time(pid).saturating_sub(before));
    for session in ids {
        let request = hyper::Request::delete(url)
            .header("mcp-session-id", session)
            .body(Full::new(Bytes::new()))
            .expect("request");
        if let Ok(r) = client.request(request).await {
            let _ = r.into_body().collect().await;
        }
    }
    report(path, upstream, sessions, latencies, wall, cpu);
}

/// The proxy's resident memory with `n` idle sessions open (HTTP upstream).
async fn idle_sessions(url: &str, pid: u32, n: usize) {
    let rss = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let before = rss();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"idle","version":"1"}}}"#;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let (session, _) = post(&client, url, None, init.to_owned()).await;
        ids.push(session.expect("session id"));
    }
    println!(
        "\nproxy RSS: {before} at start, {} with {n} idle sessions (HTTP upstream)\n",
        rss()
    );
    for session in ids {
        let request = hyper::Request::delete(url)
            .header("mcp-session-id", session)
            .body(Full::new(Bytes::new()))
            .expect("request");
        if let Ok(r) = client.request(request).await {
            let _ = r.into_body().collect().await;
        }
    }
}
