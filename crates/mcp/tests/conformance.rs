//! The official MCP conformance suite (`@modelcontextprotocol/conformance@0.2.0-alpha.12`, on Node 22 from
//! npm) runs its server scenarios, for 2025-11-25 and for 2026-07-28, against our rmcp fixture server
//! directly, through `mcp serve` with the fixture as a URL upstream, and through `mcp serve` with the fixture
//! as a command upstream (stdio). Every scenario that passes directly must pass through the proxy, and
//! enough must pass directly that the comparison means something.
//!
//! A custom harness (`harness = false`): started with `--fixture-stdio`, this binary is the stdio fixture
//! the command upstream runs. It also runs an rmcp client through the stdio proxy to that fixture
//! ([`rmcp_client`]).

#[path = "conformance/fixture.rs"]
mod fixture;
#[path = "conformance/mrtr.rs"]
mod mrtr;
#[path = "conformance/rmcp_client.rs"]
mod rmcp_client;
mod support;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tessera_mcp::http::{HttpConfig, HttpProxy, Upstream};
use tessera_mcp::upstream::child::ChildSpec;
use tessera_mcp::{McpConfig, Sessions};
use tokio_util::sync::CancellationToken;

const NAME: &str = "conformance_server_scenarios_direct_vs_proxied";
const RMCP_CLIENT: &str = "rmcp_client_through_the_stdio_proxy_in_both_eras";

/// Revisions run, each with the least number of scenarios that must pass directly.
const REVISIONS: [(&str, usize); 2] = [("2025-11-25", 30), ("2026-07-28", 35)];

/// One whole suite run's safety net (the runs take seconds; this only stops a hang).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// One test of this harness.
type TestFn = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if args.iter().any(|a| a == "--fixture-stdio") {
        runtime.block_on(fixture::serve_stdio());
        return;
    }
    let tests: [(&str, TestFn); 2] = [
        (NAME, || Box::pin(run())),
        (RMCP_CLIENT, || Box::pin(rmcp_client::run())),
    ];
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &tests {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let ignored_only = args.iter().any(|a| a == "--ignored");
    let selected: Vec<_> = tests
        .iter()
        .filter(|(name, _)| {
            !ignored_only
                && (filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        })
        .collect();
    let filtered_out = tests.len() - selected.len();
    println!("\nrunning {} tests", selected.len());
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in selected {
        let outcome = std::panic::catch_unwind(|| runtime.block_on(test()));
        if outcome.is_ok() {
            passed += 1;
            println!("test {name} ... ok");
        } else {
            failed += 1;
            println!("test {name} ... FAILED");
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered_out} filtered out\n"
    );
    if failed > 0 {
        std::process::exit(101);
    }
}

struct Proxy {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_proxy(upstream: Upstream) -> Proxy {
    start_proxy_with(HttpConfig::new(upstream)).await
}

async fn start_proxy_with(config: HttpConfig) -> Proxy {
    let proxy = HttpProxy::new(config, Sessions::new(McpConfig::default()), None).expect("proxy");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    // `localhost`, as the suite's dns-rebinding scenario needs a localhost URL.
    let url = format!(
        "http://localhost:{}/mcp",
        listener.local_addr().expect("proxy address").port()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = proxy
            .serve(
                listener,
                axum::Router::new(),
                async move {
                    let _ = stopped.await;
                },
                Duration::from_secs(2),
            )
            .await;
        served.expect("the proxy serves");
    });
    Proxy {
        url,
        stop: Some(stop),
        task,
    }
}

impl Proxy {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// Runs the suite's server scenarios of `revision` against `url`; returns the scenarios whose checks all
/// passed, and every scenario run.
async fn run_suite(
    suite: &support::npm::Conformance,
    url: &str,
    revision: &str,
    out: &Path,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).expect("create the results dir");
    let mut command = tokio::process::Command::new(&suite.node);
    command
        .arg(&suite.cli)
        .args(["server", "--url", url, "--requirements", revision, "-o"])
        .arg(out)
        .stdout(std::fs::File::create(out.join("stdout.log")).expect("log file"))
        .stderr(std::fs::File::create(out.join("stderr.log")).expect("log file"))
        .kill_on_drop(true);
    let mut child = command.spawn().expect("start the conformance suite");
    match tokio::time::timeout(RUN_TIMEOUT, child.wait()).await {
        Ok(status) => {
            status.expect("wait for the conformance suite");
        }
        Err(_) => panic!("the conformance suite against {url} ({revision}) hung"),
    }
    read_results(out)
}

/// `<out>/server-<scenario>-<timestamp>/checks.json` → (passed, all).
fn read_results(out: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut passed = BTreeSet::new();
    let mut all = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(out) else {
        return (passed, all);
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(rest) = name.strip_prefix("server-") else {
            continue;
        };
        // Strip the timestamp suffix: the scenario is everything before the last `-<digits…>` run.
        let scenario = scenario_name(rest);
        let Ok(text) = std::fs::read_to_string(dir.join("checks.json")) else {
            continue;
        };
        let Ok(Value::Array(checks)) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        all.insert(scenario.clone());
        let failed = checks
            .iter()
            .any(|c| matches!(c["status"].as_str(), Some("FAILURE")));
        if !checks.is_empty() && !failed {
            passed.insert(scenario);
        }
    }
    (passed, all)
}

/// `tools-list-2026-11-22T09-30-00-000Z` → `tools-list`.
fn scenario_name(dir: &str) -> String {
    match dir.find("-20") {
        Some(i) if dir[i + 1..].starts_with(|c: char| c.is_ascii_digit()) => dir[..i].to_owned(),
        _ => dir.to_owned(),
    }
}

async fn run() {
    let suite = support::npm::conformance();
    let stop = CancellationToken::new();
    let fixture = fixture::serve_http(&stop).await;
    let spec = me_spec();
    let via_url = start_proxy(Upstream::Url(fixture.clone())).await;
    let via_command = start_proxy(Upstream::Command(spec)).await;
    let results: PathBuf =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mcp-conformance-results");

    let mut failures = Vec::new();
    for (revision, floor) in REVISIONS {
        let targets = [
            ("direct", fixture.as_str()),
            ("url-upstream", via_url.url.as_str()),
            ("command-upstream", via_command.url.as_str()),
        ];
        let runs = futures_util::future::join_all(targets.iter().map(|(label, url)| {
            let out = results.join(format!("{revision}-{label}"));
            let suite = &suite;
            async move { (*label, run_suite(suite, url, revision, &out).await) }
        }))
        .await;
        let (direct, direct_all) = runs[0].1.clone();
        println!(
            "{revision} direct: {}/{} scenarios pass: {direct:?}",
            direct.len(),
            direct_all.len()
        );
        if direct.len() < floor {
            failures.push(format!(
                "{revision}: only {} scenarios pass directly (floor {floor})",
                direct.len()
            ));
        }
        for (label, (passed, all)) in &runs[1..] {
            let lost: Vec<&String> = direct.difference(passed).collect();
            let gained: Vec<&String> = passed.difference(&direct).collect();
            println!(
                "{revision} {label}: {}/{} pass; lost vs direct: {lost:?}; gained: {gained:?}",
                passed.len(),
                all.len()
            );
            if !lost.is_empty() {
                failures.push(format!(
                    "{revision} {label}: fail through the proxy: {lost:?}"
                ));
            }
        }
    }
    logs_reach_their_request(&via_command.url).await;
    same_progress_token_two_clients(&via_command.url).await;
    rules_over_the_shared_child(&me_spec()).await;
    via_url.stop().await;
    via_command.stop().await;
    stop.cancel();
    assert!(
        failures.is_empty(),
        "{failures:#?} (results under {})",
        results.display()
    );
}

/// 2026-07-28 over the shared stdio child: a request that set a log level gets its log messages on its own
/// response stream (stdio names no request in a log message; the proxy routes it to the only request in
/// flight that asked for logs), and one that did not gets none.
async fn logs_reach_their_request(url: &str) {
    let http = support::http::Http::new(url.replace("localhost", "127.0.0.1"));
    let call = |id: u64, log_level: Option<&str>| {
        let mut meta = serde_json::json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "log-test", "version": "0"},
        });
        if let Some(level) = log_level {
            meta["io.modelcontextprotocol/logLevel"] = serde_json::json!(level);
        }
        serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "test_logging_tool", "arguments": {}, "_meta": meta}})
    };
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "test_logging_tool"),
    ];
    let logged = http
        .send(hyper::Method::POST, &headers, Some(&call(1, Some("info"))))
        .await;
    assert_eq!(logged.status, 200, "{}", logged.body);
    let messages = logged.messages();
    let logs: Vec<&str> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .filter_map(|m| m["params"]["data"].as_str())
        .collect();
    assert_eq!(
        logs,
        [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed"
        ],
        "{}",
        logged.body
    );
    assert!(
        messages
            .last()
            .is_some_and(|m| m["id"] == 1 && m["result"].is_object())
    );
    let quiet = http
        .send(hyper::Method::POST, &headers, Some(&call(2, None)))
        .await;
    assert!(
        quiet
            .messages()
            .iter()
            .all(|m| m["method"] != "notifications/message"),
        "{}",
        quiet.body
    );
}

/// This binary as the stdio fixture.
fn me_spec() -> ChildSpec {
    let me = std::env::current_exe().expect("this test binary");
    let mut spec =
        ChildSpec::from_command(&[me.into_os_string(), OsString::from("--fixture-stdio")])
            .expect("child spec");
    spec.grace = Duration::from_secs(1);
    spec
}

/// Interception rules on 2026-07-28 traffic over the shared child: a client request blocked by tool name,
/// and the child's log messages blocked on their way to the client.
async fn rules_over_the_shared_child(spec: &ChildSpec) {
    let rules = tessera_mcp::rules::Rules::from_json(
        r#"{"rules": [
            {"name": "no-errors", "method": "tools/call", "tool": "test_error_handling", "action": "block", "code": -32040},
            {"name": "no-logs", "method": "notifications/message", "direction": "s2c", "action": "block"}
        ]}"#,
    )
    .expect("rules");
    let mut config = HttpConfig::new(Upstream::Command(spec.clone()));
    config.rules = tessera_mcp::rules::RuleSet::new(rules);
    let proxy = start_proxy_with(config).await;
    let http = support::http::Http::new(proxy.url.replace("localhost", "127.0.0.1"));
    let call = |id: u64, tool: &str| {
        serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": {}, "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/logLevel": "info"}}})
    };
    let headers = |tool: &'static str| {
        [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", tool),
        ]
    };
    let blocked = http
        .send(
            hyper::Method::POST,
            &headers("test_error_handling"),
            Some(&call(1, "test_error_handling")),
        )
        .await;
    assert_eq!(
        blocked.response(&serde_json::json!(1))["error"]["code"],
        -32040,
        "{}",
        blocked.body
    );
    let quiet = http
        .send(
            hyper::Method::POST,
            &headers("test_logging_tool"),
            Some(&call(2, "test_logging_tool")),
        )
        .await;
    let messages = quiet.messages();
    assert!(
        messages
            .iter()
            .all(|m| m["method"] != "notifications/message"),
        "{}",
        quiet.body
    );
    assert!(
        messages
            .last()
            .is_some_and(|m| m["id"] == 2 && m["result"].is_object()),
        "{}",
        quiet.body
    );
    proxy.stop().await;
}

/// Two 2026-07-28 clients over the shared child pick the same progress token and the same id at once: each
/// stream carries exactly its own request's three progress notifications, under the client's token, then its
/// own result (the child saw two different tokens of the proxy's).
async fn same_progress_token_two_clients(url: &str) {
    let http = support::http::Http::new(url.replace("localhost", "127.0.0.1"));
    let call = |client: &str| {
        serde_json::json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "test_tool_with_progress", "arguments": {}, "_meta": {
                "progressToken": "same-token",
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": client, "version": "0"}}}})
    };
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "test_tool_with_progress"),
    ];
    let (call_a, call_b) = (call("client-a"), call("client-b"));
    let (a, b) = tokio::join!(
        http.send(hyper::Method::POST, &headers, Some(&call_a)),
        http.send(hyper::Method::POST, &headers, Some(&call_b))
    );
    for reply in [a, b] {
        assert_eq!(reply.status, 200, "{}", reply.body);
        let messages = reply.messages();
        let progress: Vec<(&Value, &Value)> = messages
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .map(|m| (&m["params"]["progressToken"], &m["params"]["progress"]))
            .collect();
        assert_eq!(progress.len(), 3, "{}", reply.body);
        assert!(
            progress.iter().all(|(token, _)| *token == "same-token"),
            "{}",
            reply.body
        );
        let steps: Vec<f64> = progress.iter().filter_map(|(_, p)| p.as_f64()).collect();
        assert_eq!(steps, [0.0, 50.0, 100.0], "{}", reply.body);
        let last = messages.last().expect("a response");
        assert_eq!(last["id"], 5);
        assert!(last["result"].is_object(), "{}", reply.body);
    }
}
