//! `tessera mcp stdio -- mcp-server-everything stdio`, end to end through the binary.

#[path = "../../mcp/tests/support/npm.rs"]
mod npm;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// The client's first line: `initialize` at 2025-06-18, id 1.
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

fn read_until(reader: &mut impl BufRead, needle: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .expect("read the proxy's stdout");
        assert!(n > 0, "stdout ended before a line containing {needle}");
        if line.contains(needle) {
            return line;
        }
    }
}

#[test]
fn stdio_proxy_binary_with_server_everything() {
    let server = npm::server_everything();
    let tape = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mcp-stdio-{}.tape", std::process::id()));
    let rules = tape.with_extension("rules.json");
    std::fs::write(
        &rules,
        r#"{"rules": [{"name": "no-sum", "method": "tools/call", "tool_regex": "^get-sum$", "action": "block", "message": "no sums"}]}"#,
    )
    .unwrap();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["mcp", "stdio", "--tape"])
        .arg(&tape)
        .arg("--rules")
        .arg(&rules)
        .arg("--")
        .arg(&server)
        .arg("stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tessera");
    let mut stdin = proxy.stdin.take().unwrap();
    let mut stdout = BufReader::new(proxy.stdout.take().unwrap());
    let mut send = |line: &str| {
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .expect("write to tessera")
    };
    send(INITIALIZE);
    let init = read_until(&mut stdout, r#""id":1"#);
    assert!(init.contains(r#""protocolVersion":"2025-06-18""#), "{init}");
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    send("not json at all");
    let parse_error = read_until(&mut stdout, "-32700");
    assert!(parse_error.contains(r#""id":null"#), "{parse_error}");
    send(r#"{"jsonrpc":"2.0","id":"tl","method":"tools/list"}"#);
    assert!(read_until(&mut stdout, r#""id":"tl""#).contains(r#""name":"echo""#));
    send(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"message":"über ✓"}}}"#,
    );
    assert!(read_until(&mut stdout, r#""id":3"#).contains("Echo: über ✓"));
    send(r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#);
    assert!(read_until(&mut stdout, r#""id":4"#).contains(r#""result":{}"#));
    // --rules: the blocked call is answered by the proxy with the rule's error.
    send(
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":1,"b":2}}}"#,
    );
    let blocked = read_until(&mut stdout, r#""id":5"#);
    assert!(
        blocked.contains("-32003") && blocked.contains("no sums"),
        "{blocked}"
    );
    // A batch is split for the server and answered as one array.
    send(r#"[{"jsonrpc":"2.0","id":6,"method":"ping"},{"jsonrpc":"2.0","id":7,"method":"ping"}]"#);
    let answers = read_until(&mut stdout, r#""id":7"#);
    assert!(
        answers.starts_with('[') && answers.contains(r#""id":6"#),
        "{answers}"
    );
    drop(stdin);
    let status = proxy.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let recorded = std::fs::read_to_string(&tape).unwrap();
    assert!(
        recorded
            .lines()
            .next()
            .unwrap()
            .contains(r#""type":"init""#)
    );
    assert!(
        recorded.contains(r#""method":"initialize","rtt_us""#)
            || recorded.contains(r#""type":"correlation""#)
    );
    assert_eq!(
        recorded
            .lines()
            .filter(|l| l.contains(r#""type":"correlation""#))
            .count(),
        6
    );
    let shown = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["mcp", "tape", "show"])
        .arg(&tape)
        .output()
        .unwrap();
    assert!(shown.status.success());
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("sessions: 1"), "{shown}");
    for method in ["initialize", "tools/list", "tools/call", "ping"] {
        assert!(
            shown.lines().any(|l| l.starts_with(method)),
            "{method} missing in {shown}"
        );
    }
    assert!(shown.lines().any(|l| l.starts_with("no-sum")), "{shown}");
    let _ = std::fs::remove_file(&tape);
    let _ = std::fs::remove_file(&rules);
}

/// SIGTERM to `tessera mcp stdio` (its client still connected) stops the proxy, which shuts its child down
/// — the child runs in a process group of its own, so the signal never reached it — and leaves with the
/// tape written.
#[test]
fn sigterm_stops_the_proxy_and_its_child() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mcp-stdio-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("child.pid");
    let tape = dir.join("term.tape");
    let script = format!(
        "echo $$ > {}; while :; do sleep 1; done",
        pid_file.display()
    );
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["mcp", "stdio", "--grace-ms", "200", "--tape"])
        .arg(&tape)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child is up once it wrote its pid.
    let child = pid_from(&pid_file);
    // SAFETY: kill(2) on the proxy's own pid, a process this test started.
    assert_eq!(unsafe { libc::kill(proxy.id() as i32, libc::SIGTERM) }, 0);
    let status = proxy.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The child was shut down (and reaped) before the proxy left: its pid is gone.
    assert!(
        !std::path::Path::new(&format!("/proc/{child}")).exists(),
        "the child {child} outlived the proxy"
    );
    let written = std::fs::read_to_string(&tape).unwrap();
    assert!(written.contains("\"type\":\"session\""), "{written}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pid a child shell wrote into `file`, once it is there (the child is up).
fn pid_from(file: &std::path::Path) -> i32 {
    loop {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        std::thread::yield_now();
    }
}

/// Waits until process `pid` has exited (a zombie of whoever adopted it, or gone); fails after 20 s.
fn ends_within_20s(pid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut status = String::new();
    while std::time::Instant::now() < deadline {
        // An exited child becomes a zombie of init (or of a subreaper) or disappears once reaped.
        status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if status.is_empty() || status.contains(") Z ") {
            return;
        }
        std::thread::yield_now();
    }
    panic!("the child {pid} outlived the killed proxy by 20 s: {status}");
}

/// The children `pid` has (every thread's list), from /proc.
fn children_of(pid: u32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    children
}

/// SIGKILL to `tessera mcp stdio` gives the proxy no chance to shut its child down; the kernel closes the
/// proxy's end of the child's stdin, and a server that follows the spec (as server-everything does) sees
/// the end of its input and exits: no orphan is left serving nobody.
#[test]
fn sigkill_of_the_proxy_ends_its_child_through_stdin() {
    let server = npm::server_everything();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["mcp", "stdio", "--"])
        .arg(&server)
        .arg("stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tessera");
    let mut stdin = proxy.stdin.take().unwrap();
    let mut stdout = BufReader::new(proxy.stdout.take().unwrap());
    writeln!(stdin, "{INITIALIZE}").unwrap();
    stdin.flush().unwrap();
    // The child answered, so it is up (and it is the proxy's only child).
    read_until(&mut stdout, r#""id":1"#);
    let children = children_of(proxy.id());
    assert_eq!(children.len(), 1, "{children:?}");
    let child = children[0];

    proxy.kill().unwrap();
    proxy.wait().unwrap();
    // The client keeps its end open: only the proxy's death can end the child.
    ends_within_20s(child);
    drop(stdin);
}

/// `--rules FILE` is read again on SIGHUP, the session kept: a call allowed before is blocked after the
/// file changed; a file that no longer parses is reported and the rules in force stay.
#[test]
fn sighup_reloads_the_rules_in_the_same_session() {
    let server = npm::server_everything();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mcp-stdio-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules.json");
    std::fs::write(&rules, r#"{"rules": []}"#).unwrap();
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["mcp", "stdio", "--rules"])
        .arg(&rules)
        .arg("--")
        .arg(&server)
        .arg("stdio")
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tessera");
    let mut stdin = proxy.stdin.take().unwrap();
    let mut stdout = BufReader::new(proxy.stdout.take().unwrap());
    let mut stderr = BufReader::new(proxy.stderr.take().unwrap());
    let send = |stdin: &mut std::process::ChildStdin, line: &str| {
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .expect("write to tessera")
    };
    let echo = |id: u32| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"m{id}"}}}}}}"#
        )
    };
    let hangup = |pid: u32| {
        // SAFETY: kill(2) on the proxy's own pid, a process this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    };
    send(&mut stdin, INITIALIZE);
    read_until(&mut stdout, r#""id":1"#);
    send(
        &mut stdin,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    send(&mut stdin, &echo(2));
    let allowed = read_until(&mut stdout, r#""id":2"#);
    assert!(allowed.contains("Echo: m2"), "{allowed}");

    std::fs::write(
        &rules,
        r#"{"rules": [{"name": "no-echo", "method": "tools/call", "tool": "echo", "action": "block", "message": "echo is off"}]}"#,
    )
    .unwrap();
    hangup(proxy.id());
    let reloaded = read_until(&mut stderr, "rules reloaded");
    assert!(reloaded.contains("rules=1"), "{reloaded}");
    send(&mut stdin, &echo(3));
    let blocked = read_until(&mut stdout, r#""id":3"#);
    assert!(blocked.contains("echo is off"), "{blocked}");

    std::fs::write(&rules, "{ not json").unwrap();
    hangup(proxy.id());
    read_until(&mut stderr, "rules not reloaded");
    send(&mut stdin, &echo(4));
    let still = read_until(&mut stdout, r#""id":4"#);
    assert!(
        still.contains("echo is off"),
        "the rules in force stay: {still}"
    );

    // The client leaves: the proxy ends.
    drop(stdin);
    let status = proxy.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child that never reads its stdin (so never sees its end) still ends when the proxy is SIGKILLed:
/// the kernel sends it the parent-death signal the proxy asked for (SIGTERM).
#[test]
fn sigkill_of_the_proxy_ends_a_child_that_ignores_its_stdin() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mcp-stdio-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("child.pid");
    let script = format!(
        "echo $$ > {}; while :; do sleep 1; done",
        pid_file.display()
    );
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["mcp", "stdio", "--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = pid_from(&pid_file);
    proxy.kill().unwrap();
    proxy.wait().unwrap();
    // The client (this test) keeps the proxy's stdin open all along.
    ends_within_20s(child);
    let _ = std::fs::remove_dir_all(&dir);
}
