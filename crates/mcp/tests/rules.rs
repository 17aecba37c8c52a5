//! Interception rules through the HTTP proxy, with server-everything per session (command upstream) and a
//! tape: a tool blocked by name, a tag added by one rule that another rule matches, a server request
//! (sampling) blocked on its way to the client and answered to the child by the proxy, and the matches in the
//! tape's frames and rule records.

mod support;

use support::answer::{Answer, answer_server};

use std::ffi::OsString;

use serde_json::{Value, json};
use support::proxy::start_with;
use tessera_mcp::http::{HttpConfig, Upstream};
use tessera_mcp::rules::{RuleSet, Rules};
use tessera_mcp::tape::{Tape, TapeConfig};
use tessera_mcp::upstream::child::ChildSpec;

const RULES: &str = r#"{"rules": [
    {"name": "audit-tools", "method": "tools/*", "direction": "c2s", "action": "tag", "tag": "audited"},
    {"name": "log-calls", "method": "tools/call", "action": "log"},
    {"name": "no-sum", "method": "tools/call", "tool": "get-sum", "action": "block", "message": "get-sum is not allowed"},
    {"name": "no-ping-when-audited", "method": "ping", "tags": ["audited"], "action": "block", "code": -32050},
    {"name": "no-sampling", "method": "sampling/createMessage", "direction": "s2c", "action": "block", "message": "no sampling through this proxy"}
]}"#;

fn call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_block_log_and_tag_and_are_recorded() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mcp-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rules.tape");
    let (tape, writer) = Tape::create(&path, TapeConfig::default()).await.unwrap();
    let bin = support::npm::server_everything();
    let mut config = HttpConfig::new(Upstream::Command(
        ChildSpec::from_command(&[OsString::from(bin), OsString::from("stdio")]).unwrap(),
    ));
    config.rules = RuleSet::new(Rules::from_json(RULES).unwrap());
    let p = start_with(config, Some(tape.clone())).await;

    // A client that can sample, so server-everything offers its sampling tool.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
        "clientInfo": {"name": "rules-test", "version": "0"}}});
    let reply = p.http.post(None, &init).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session = reply.header("mcp-session-id").unwrap().to_owned();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(p.http.post(Some(&session), &note).await.status, 202);

    // Not yet audited: ping passes.
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let reply = p.http.post(Some(&session), &ping).await;
    assert_eq!(reply.response(&json!(1))["result"], json!({}));
    // A tool call passes and tags the session.
    let reply = p
        .http
        .post(Some(&session), &call(2, "echo", json!({"message": "hi"})))
        .await;
    assert_eq!(
        reply.response(&json!(2))["result"]["content"][0]["text"],
        "Echo: hi"
    );
    // get-sum is blocked by name, with the rule's error and the request's id.
    let reply = p
        .http
        .post(Some(&session), &call(3, "get-sum", json!({"a": 1, "b": 2})))
        .await;
    assert_eq!(reply.status, 200);
    let error = &reply.response(&json!(3))["error"];
    assert_eq!(error["code"], -32003);
    assert_eq!(error["message"], "get-sum is not allowed");
    // Audited now: ping is blocked by the tag rule.
    let ping = json!({"jsonrpc": "2.0", "id": 4, "method": "ping"});
    let reply = p.http.post(Some(&session), &ping).await;
    assert_eq!(reply.response(&json!(4))["error"]["code"], -32050);
    // The server's sampling request is blocked on its way to the client: the proxy answers the child with
    // the rule's error, so the call completes without the client answering anything.
    let reply = p
        .http
        .post(
            Some(&session),
            &call(
                5,
                "trigger-sampling-request",
                json!({"prompt": "hello", "maxTokens": 5}),
            ),
        )
        .await;
    let answer = reply.response(&json!(5));
    assert!(
        answer
            .to_string()
            .contains("no sampling through this proxy"),
        "{answer}"
    );

    assert_eq!(p.http.delete(&session).await.status, 200);
    p.proxy.sessions().registry().wait_empty().await;
    p.finish().await;
    drop(tape);
    writer.finish().await.unwrap();

    let records: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rule_records: Vec<&Value> = records.iter().filter(|r| r["type"] == "rule").collect();
    let blocked = |name: &str| {
        rule_records.iter().any(|r| {
            r["blocked"] == true && r["rules"].as_array().unwrap().iter().any(|n| n == name)
        })
    };
    assert!(
        blocked("no-sum") && blocked("no-ping-when-audited") && blocked("no-sampling"),
        "{rule_records:?}"
    );
    assert!(
        rule_records
            .iter()
            .any(|r| r["dir"] == "s2c" && r["method"] == "sampling/createMessage")
    );
    // Frames after the tag carry it; the blocked requests never became frames.
    let frames: Vec<&Value> = records.iter().filter(|r| r["type"] == "frame").collect();
    let echo = frames
        .iter()
        .find(|f| f["message"]["id"] == 2 && f["dir"] == "c2s")
        .unwrap();
    assert!(
        echo["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "audited"),
        "{echo}"
    );
    assert!(
        !frames
            .iter()
            .any(|f| f["message"]["id"] == 3 && f["dir"] == "c2s")
    );
    // Request headers are recorded for POST and DELETE alike.
    let http_records: Vec<&Value> = records.iter().filter(|r| r["type"] == "http").collect();
    assert!(
        http_records
            .iter()
            .any(|r| r["http"] == "DELETE" && r["session"] == json!(session))
    );
    assert!(
        http_records
            .iter()
            .any(|r| r["http"] == "POST" && r["id"] == 5)
    );
    // So are the heads of the proxy's answers: the new session's id on the initialize answer, 202s.
    let answers: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "http_response")
        .collect();
    assert!(answers.iter().any(|r| r["http"] == "POST"
        && r["path"] == "/mcp"
        && r["status"] == 200
        && r["session"] == json!(session)
        && r["headers"]["mcp-session-id"] == json!(session)));
    assert!(answers.iter().any(|r| r["status"] == 202));
    assert!(
        answers
            .iter()
            .any(|r| r["http"] == "DELETE" && r["status"] == 200)
    );
    // `tape show` counts them.
    let summary =
        tessera_mcp::tape::summarize(std::io::BufReader::new(std::fs::File::open(&path).unwrap()))
            .unwrap();
    assert_eq!(summary.bad_lines, 0);
    assert_eq!(summary.rules.get("no-sum"), Some(&(1, 1)));
    assert_eq!(summary.rules.get("no-sampling"), Some(&(1, 1)));
    assert!(summary.to_string().contains("no-ping-when-audited"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rules of the newer kinds: regexes on method and tool, values at JSON pointers, both directions.
const BOTH_WAYS: &str = r#"{"rules": [
    {"name": "no-get-tools", "method": "tools/call", "tool_regex": "^get-", "action": "block", "message": "no get- tools"},
    {"name": "no-secret-echo", "method_regex": "^tools/(call|run)$", "values": {"/params/name": "echo", "/params/arguments/message": "secret"}, "action": "block", "code": -32051},
    {"name": "no-sampling", "method": "sampling/createMessage", "direction": "s2c", "action": "block", "message": "no sampling through this proxy"},
    {"name": "no-progress", "method_regex": "^notifications/prog", "direction": "s2c", "action": "block"},
    {"name": "log-pings", "method": "ping", "action": "log"}
]}"#;

fn sampling_client_init() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
        "clientInfo": {"name": "rules-test", "version": "0"}}})
}

fn read_tape(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn blocked_in(records: &[Value], name: &str, dir: &str) -> bool {
    records.iter().any(|r| {
        r["type"] == "rule"
            && r["blocked"] == true
            && r["dir"] == dir
            && r["rules"].as_array().unwrap().iter().any(|n| n == name)
    })
}

/// `mcp stdio` with rules: client requests blocked by tool regex and by values, the server's sampling request
/// answered to the child by the proxy, its progress notifications dropped; everything else passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_on_stdio_both_ways() {
    use support::client::LineClient;
    use tessera_mcp::stdio::{self, StdioOptions};
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mcp-rules-stdio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stdio.tape");
    let (tape, writer) = Tape::create(&path, TapeConfig::default()).await.unwrap();
    let bin = support::npm::server_everything();
    let spec = ChildSpec::from_command(&[OsString::from(bin), OsString::from("stdio")]).unwrap();
    let sessions = tessera_mcp::Sessions::new(tessera_mcp::McpConfig::default());
    let (client_w, proxy_in) = tokio::io::duplex(1 << 16);
    let (proxy_out, client_r) = tokio::io::duplex(1 << 16);
    let options = StdioOptions {
        tape: Some(tape.clone()),
        rules: RuleSet::new(Rules::from_json(BOTH_WAYS).unwrap()),

        ..StdioOptions::default()
    };
    let running = sessions.clone();
    let proxy = tokio::spawn(async move {
        stdio::run_with(&running, &spec, proxy_in, proxy_out, options)
            .await
            .unwrap()
    });
    let mut client = LineClient::new(client_r, client_w);
    client.send(sampling_client_init()).await;
    assert_eq!(
        client.response(&json!(0)).await["result"]["protocolVersion"],
        "2025-11-25"
    );
    client
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;

    let echo = client
        .request(
            json!(1),
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "hi"}}),
        )
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "Echo: hi");
    let sum = client
        .request(
            json!(2),
            "tools/call",
            json!({"name": "get-sum", "arguments": {"a": 1, "b": 2}}),
        )
        .await;
    assert_eq!(sum["error"]["code"], -32003);
    assert_eq!(sum["error"]["message"], "no get- tools");
    let secret = client
        .request(
            json!(3),
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "secret"}}),
        )
        .await;
    assert_eq!(secret["error"]["code"], -32051);
    let pong = client.request(json!(4), "ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));
    // The child's sampling request never reaches the client: the proxy answers it with the rule's error.
    let sampled = client
        .request(json!(5), "tools/call", json!({"name": "trigger-sampling-request", "arguments": {"prompt": "hello", "maxTokens": 5}}))
        .await;
    assert!(
        sampled
            .to_string()
            .contains("no sampling through this proxy"),
        "{sampled}"
    );
    // Progress is dropped on its way; the result still comes.
    let long = client
        .request(
            json!(6),
            "tools/call",
            json!({"name": "trigger-long-running-operation",
            "arguments": {"duration": 0.2, "steps": 2}, "_meta": {"progressToken": "op"}}),
        )
        .await;
    assert!(long["result"].is_object(), "{long}");
    assert!(
        !client
            .seen
            .iter()
            .any(|m| m["method"] == "sampling/createMessage"
                || m["method"] == "notifications/progress"),
        "{:?}",
        client.seen
    );
    client.close();
    proxy.await.unwrap();
    assert_eq!(sessions.registry().pending_len(), 0);
    drop(tape);
    writer.finish().await.unwrap();

    let records = read_tape(&path);
    for (name, dir) in [
        ("no-get-tools", "c2s"),
        ("no-secret-echo", "c2s"),
        ("no-sampling", "s2c"),
        ("no-progress", "s2c"),
    ] {
        assert!(blocked_in(&records, name, dir), "{name} {dir}: {records:?}");
    }
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "rule" && r["blocked"] == false && r["method"] == "ping")
    );
    // Blocked messages never became frames; the rest did.
    let frame = |dir: &str, id: u64| {
        records.iter().any(|r| {
            r["type"] == "frame"
                && r["dir"] == dir
                && r["message"]["id"] == id
                && r["message"]["method"].is_string()
        })
    };
    assert!(frame("c2s", 1) && frame("c2s", 5) && !frame("c2s", 2) && !frame("c2s", 3));
    assert!(
        !records
            .iter()
            .any(|r| r["type"] == "frame" && r["message"]["method"] == "notifications/progress")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A URL upstream's server messages go through the rules too: on the POST's SSE stream, the sampling
/// request is left out and answered upstream, the progress notifications are left out, the rest passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_on_a_url_upstreams_server_messages() {
    let upstream = support::http::server_everything_http().await;
    let mut config = HttpConfig::new(Upstream::Url(upstream.url.clone()));
    config.rules = RuleSet::new(Rules::from_json(BOTH_WAYS).unwrap());
    let p = start_with(config, None).await;
    let reply = p.http.post(None, &sampling_client_init()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session = reply.header("mcp-session-id").unwrap().to_owned();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(p.http.post(Some(&session), &note).await.status, 202);

    let reply = p
        .http
        .post(Some(&session), &call(2, "get-sum", json!({"a": 1, "b": 2})))
        .await;
    assert_eq!(
        reply.response(&json!(2))["error"]["message"],
        "no get- tools"
    );
    let reply = p
        .http
        .post(Some(&session), &call(3, "get-sum-of-nothing", json!({})))
        .await;
    assert_eq!(reply.response(&json!(3))["error"]["code"], -32003);

    let reply = p
        .http
        .post(
            Some(&session),
            &call(
                5,
                "trigger-sampling-request",
                json!({"prompt": "hello", "maxTokens": 5}),
            ),
        )
        .await;
    assert_eq!(reply.status, 200);
    let messages = reply.messages();
    assert!(
        !messages
            .iter()
            .any(|m| m["method"] == "sampling/createMessage"),
        "{messages:?}"
    );
    let answer = reply.response(&json!(5));
    assert!(
        answer
            .to_string()
            .contains("no sampling through this proxy"),
        "{answer}"
    );

    let long = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "trigger-long-running-operation",
        "arguments": {"duration": 0.2, "steps": 2}, "_meta": {"progressToken": "op"}}});
    let reply = p.http.post(Some(&session), &long).await;
    let messages = reply.messages();
    assert!(
        reply.response(&json!(6))["result"].is_object(),
        "{}",
        reply.body
    );
    assert!(
        !messages
            .iter()
            .any(|m| m["method"] == "notifications/progress"),
        "{messages:?}"
    );

    assert_eq!(p.http.delete(&session).await.status, 200);
    p.proxy.sessions().registry().wait_empty().await;
    p.finish().await;
}

/// With rules, a URL upstream's answers pass only once the rules have seen them: an SSE body event by event,
/// where an event over the message limit (the rules cannot see it whole) is left out; a JSON body held
/// until it ends, where a server request a rule blocks (here sampling) never reaches the client. When what
/// was left out was the answer, the client gets the proxy's error as the body ends, not after the
/// request's deadline; answers under the limit pass; an SSE body labelled in another case is still read
/// event by event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_passes_only_once_the_rules_have_seen_it() {
    let cases = [
        (Answer::Sse(100, "text/event-stream"), None),
        (
            Answer::Sse(8 * 1024, "text/event-stream"),
            Some("message limit"),
        ),
        (Answer::JsonRequest, Some("blocked by an interception rule")),
        (Answer::Json(8 * 1024), Some("message limit")),
        (Answer::Json(100), None),
        (
            Answer::Sse(8 * 1024, "Text/Event-Stream; charset=utf-8"),
            Some("message limit"),
        ),
    ];
    for (answer, refused) in cases {
        let (url, server) = answer_server(answer).await;
        let mut config = HttpConfig::new(Upstream::Url(url));
        config.rules = RuleSet::new(Rules::from_json(RULES).unwrap());
        config.max_body = 4 * 1024;
        let p = start_with(config, None).await;
        let (session, _) = p.http.initialize().await;
        let reply = p
            .http
            .post(Some(&session), &call(9, "big", json!({})))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            !reply.body.contains("sampling/createMessage"),
            "{}",
            reply.body
        );
        let answer = reply.response(&json!(9));
        match refused {
            Some(why) => {
                assert_eq!(answer["error"]["code"], -32000, "{answer}");
                assert!(
                    answer["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(why)),
                    "{answer}"
                );
            }
            None => assert_eq!(
                answer["result"]["content"][0]["text"]
                    .as_str()
                    .map(str::len),
                Some(100)
            ),
        }
        assert_eq!(p.http.delete(&session).await.status, 200);
        p.proxy.sessions().registry().wait_empty().await;
        p.finish().await;
        server.abort();
    }
}

/// Rules replaced while the proxy runs (what SIGHUP does in `tessera mcp serve`) apply to the next message
/// of a session already open, with no new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_rules_apply_to_open_sessions() {
    let bin = support::npm::server_everything();
    let mut config = HttpConfig::new(Upstream::Command(
        ChildSpec::from_command(&[OsString::from(bin), OsString::from("stdio")]).unwrap(),
    ));
    let rules = RuleSet::new(Rules::from_json(r#"{"rules": []}"#).unwrap());
    config.rules = rules.clone();
    let p = start_with(config, None).await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "reload-test", "version": "0"}}});
    let reply = p.http.post(None, &init).await;
    let session = reply.header("mcp-session-id").unwrap().to_owned();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(p.http.post(Some(&session), &note).await.status, 202);
    let reply = p
        .http
        .post(
            Some(&session),
            &call(1, "echo", json!({"message": "before"})),
        )
        .await;
    assert_eq!(
        reply.response(&json!(1))["result"]["content"][0]["text"],
        "Echo: before"
    );

    assert!(rules.replace(
        Rules::from_json(
            r#"{"rules": [{"name": "no-echo", "method": "tools/call", "tool": "echo", "action": "block", "message": "echo is off"}]}"#
        )
        .unwrap()
    ));
    let reply = p
        .http
        .post(
            Some(&session),
            &call(2, "echo", json!({"message": "after"})),
        )
        .await;
    assert_eq!(reply.response(&json!(2))["error"]["message"], "echo is off");
    // A proxy without rules has none to replace.
    assert!(!RuleSet::none().replace(Rules::default()));
    assert_eq!(p.http.delete(&session).await.status, 200);
    p.finish().await;
}
