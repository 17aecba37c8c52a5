//! Load generator for the MCP proxy and its peers, in one run: latency (p50/p95/p99), throughput, and each
//! proxy's own CPU time per request and memory, against talking to the server directly.
//!
//! ```text
//! cargo build --release -p tessera --bin tessera -p tessera-mcp --example mcp_load
//! target/release/examples/mcp_load --tessera target/release/tessera \
//!     --everything <npm dir>/node_modules/.bin/mcp-server-everything \
//!     --mcp-proxy <venv>/bin/mcp-proxy --supergateway <npm dir>/node_modules/.bin/supergateway \
//!     --requests 2000 --stdio-requests 10000 --idle-sessions 1000 \
//!     [--only stdio|stdio-http|http-http|http-stdio] [--warmup N]
//! ```
//!
//! `--only` measures one path; `--warmup N` makes N calls per HTTP session before the timed ones (default 1:
//! a server that runs a child per session — node's JIT included — is otherwise measured cold).
//!
//! Paths measured, each with 1 session and (HTTP clients) 50 concurrent sessions:
//! - `stdio`: a stdio client, a stdio server (`tessera mcp stdio`; neither peer has this mode);
//! - `stdio→http`: a stdio client, a Streamable HTTP server (`tessera mcp connect`, `mcp-proxy
//!   --transport streamablehttp URL`, `supergateway --streamableHttp URL`);
//! - `http→stdio`: Streamable HTTP clients, a stdio server (`tessera mcp serve -- cmd`, `mcp-proxy --port P
//!   cmd` (one child shared by all sessions), `supergateway --stdio cmd --outputTransport streamableHttp
//!   --stateful` (a child per session));
//! - `http→http`: Streamable HTTP on both sides (`tessera mcp serve --upstream URL`; neither peer has it).
//!
//! Upstreams: `fast`, this binary's own server, which answers at once (stdio, or Streamable HTTP on one
//! thread), so that the proxy is what is measured; and server-everything (stdio, or its Streamable HTTP
//! mode). A proxy's CPU time is the utime+stime of its process tree, without the upstream servers it
//! started, over the measured requests (from /proc, 10 ms ticks).

mod fast;
mod load;
mod procs;
mod proxies;
mod report;

use load::{Label, Row};
use proxies::{Bins, Peer, Running, Upstream};

struct Options {
    bins: Bins,
    everything: Option<String>,
    requests: usize,
    stdio_requests: usize,
    idle_sessions: Option<usize>,
    warmup: usize,
    only: Option<String>,
    me: String,
}

impl Options {
    /// Whether `--only` lets the path (`stdio`, `stdio-http`, `http-http`, `http-stdio`) be measured.
    fn wants(&self, path: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == path)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("fast-server") => return fast::stdio_server(),
        Some("fast-http") => {
            let port = args.get(2).and_then(|p| p.parse().ok()).expect("a port");
            return fast::http_server(port);
        }
        _ => {}
    }
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let requests: usize = arg("--requests")
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let options = Options {
        bins: Bins {
            tessera: arg("--tessera").unwrap_or_else(|| "target/release/tessera".into()),
            mcp_proxy: arg("--mcp-proxy"),
            supergateway: arg("--supergateway"),
        },
        everything: arg("--everything"),
        requests,
        // stdio is cheap per request: more of them, so CPU time (10 ms ticks) is measured to a few percent.
        stdio_requests: arg("--stdio-requests")
            .and_then(|n| n.parse().ok())
            .unwrap_or(requests * 5),
        idle_sessions: arg("--idle-sessions").and_then(|n| n.parse().ok()),
        warmup: arg("--warmup")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1)
            .max(1),
        only: arg("--only"),
        me: std::env::current_exe()
            .expect("own path")
            .display()
            .to_string(),
    };
    let mut rows = Vec::new();
    let mut startups = Vec::new();
    Row::header();
    let push = |row: Row, rows: &mut Vec<Row>| {
        row.print();
        rows.push(row);
    };

    // stdio ↔ stdio.
    let fast_stdio = vec![options.me.clone(), "fast-server".to_owned()];
    let everything_stdio = options
        .everything
        .as_ref()
        .map(|e| vec![e.clone(), "stdio".to_owned()]);
    let mut stdio_upstreams = vec![("fast", "fast-server", &fast_stdio, options.stdio_requests)];
    if let Some(se) = &everything_stdio {
        stdio_upstreams.push((
            "server-everything",
            "server-everything",
            se,
            options.requests,
        ));
    }
    for &(name, marker, server, n) in &stdio_upstreams {
        if !options.wants("stdio") {
            break;
        }
        let label = |proxy| Label {
            path: "stdio",
            proxy,
            upstream: name,
        };
        push(load::stdio(label("direct"), server, None, n), &mut rows);
        let mut command = vec![
            options.bins.tessera.clone(),
            "mcp".into(),
            "stdio".into(),
            "--".into(),
        ];
        command.extend(server.iter().cloned());
        push(
            load::stdio(label("tessera"), &command, Some(Some(marker)), n),
            &mut rows,
        );
    }

    if options.only.as_deref() == Some("stdio") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // The HTTP upstreams: the fast one, and server-everything's Streamable HTTP mode.
    let mut http_upstreams: Vec<(&str, Running)> = vec![("fast", fast_http(&options.me))];
    if let Some(everything) = &options.everything {
        http_upstreams.push(("server-everything", everything_http(everything)));
    }

    // stdio → HTTP: the bridges.
    for (name, upstream) in &http_upstreams {
        if !options.wants("stdio-http") {
            break;
        }
        for proxy in options.bins.proxies() {
            let command = options.bins.bridge(proxy, &upstream.url);
            let label = Label {
                path: "stdio→http",
                proxy: proxy.label(),
                upstream: name,
            };
            push(
                load::stdio(label, &command, Some(None), options.requests),
                &mut rows,
            );
        }
    }

    runtime.block_on(async {
        // HTTP → HTTP, and the upstreams' own HTTP as the reference.
        for (name, upstream) in &http_upstreams {
            if !options.wants("http-http") {
                break;
            }
            let proxy = options
                .bins
                .serve(Peer::Tessera, &Upstream::Url(upstream.url.clone()));
            startups.push((
                format!("tessera mcp serve --upstream ({name})"),
                proxy.startup,
            ));
            for sessions in [1, 50] {
                let direct = Label {
                    path: "http",
                    proxy: "direct",
                    upstream: name,
                };
                push(
                    load::http(
                        direct,
                        &upstream.url,
                        None,
                        sessions,
                        options.requests,
                        options.warmup,
                    )
                    .await,
                    &mut rows,
                );
                let label = Label {
                    path: "http→http",
                    proxy: "tessera",
                    upstream: name,
                };
                let row = load::http(
                    label,
                    &proxy.url,
                    Some((proxy.pid(), None)),
                    sessions,
                    options.requests,
                    options.warmup,
                )
                .await;
                push(row, &mut rows);
            }
            if *name == "fast" {
                if let Some(n) = options.idle_sessions {
                    let (before, with) = load::idle_sessions(&proxy.url, proxy.pid(), n).await;
                    report::idle(n, before, with);
                }
            }
        }
        // HTTP → stdio: a command upstream.
        for &(name, marker, server, _) in &stdio_upstreams {
            if !options.wants("http-stdio") {
                break;
            }
            for proxy in options.bins.proxies() {
                for sessions in [1, 50] {
                    let running = options
                        .bins
                        .serve(proxy, &Upstream::Command(server.clone()));
                    startups.push((
                        format!("{} serving Streamable HTTP ({name} command)", proxy.label()),
                        running.startup,
                    ));
                    let label = Label {
                        path: "http→stdio",
                        proxy: proxy.label(),
                        upstream: name,
                    };
                    let row = load::http(
                        label,
                        &running.url,
                        Some((running.pid(), Some(marker))),
                        sessions,
                        options.requests,
                        options.warmup,
                    )
                    .await;
                    push(row, &mut rows);
                }
            }
        }
    });
    drop(http_upstreams);
    report::summary(&rows, &startups);
}

/// The fast upstream over Streamable HTTP, as a child process.
fn fast_http(me: &str) -> Running {
    let port = proxies::free_port();
    start_http(
        std::process::Command::new(me).args(["fast-http", &port.to_string()]),
        port,
    )
}

/// server-everything's own Streamable HTTP mode.
fn everything_http(everything: &str) -> Running {
    let port = proxies::free_port();
    start_http(
        std::process::Command::new(everything)
            .arg("streamableHttp")
            .env("PORT", port.to_string()),
        port,
    )
}

fn start_http(command: &mut std::process::Command, port: u16) -> Running {
    let started = std::time::Instant::now();
    let child = proxies::spawn_group(
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "upstream did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Running {
        child,
        url: format!("http://127.0.0.1:{port}/mcp"),
        startup: started.elapsed(),
    }
}
