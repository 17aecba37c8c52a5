//! `tessera mcp serve -- mcp-server-everything stdio`, end to end through the binary: a session over HTTP,
//! `/health`, `/metrics`, a tape whose HTTP headers have their credentials redacted, and a graceful stop on
//! SIGTERM.

#[path = "../../mcp/tests/support/npm.rs"]
mod npm;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

/// One HTTP/1.1 exchange over a fresh connection: (status, head, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the proxy");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn serve_binary_with_a_command_upstream() {
    let server = npm::server_everything();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mcp-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tape = dir.join("serve.tape");
    // In front of a command `serve` runs on one worker thread by default: the whole test runs on it.
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "mcp",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shutdown-grace",
            "2",
            "--redact-header",
            "X-Tenant",
            "--tape",
        ])
        .arg(&tape)
        .arg("--")
        .arg(&server)
        .arg("stdio")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tessera");
    let mut stderr = BufReader::new(proxy.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "tessera exited before listening"
        );
        if let Some(rest) = line
            .trim()
            .strip_prefix("tessera mcp serve: listening on http://")
        {
            break rest.trim_end_matches("/mcp").to_owned();
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});

    let json = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (status, head, body) = http(&addr, "POST", "/mcp", &json, init);
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(body.contains(r#""protocolVersion":"2025-06-18""#), "{body}");
    let session = header(&head, "mcp-session-id")
        .expect("session id")
        .to_owned();
    let with_session = [
        json[0],
        json[1],
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let (status, _, _) = http(
        &addr,
        "POST",
        "/mcp",
        &with_session,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(status, 202);
    let with_secrets = [
        with_session[0],
        with_session[1],
        with_session[2],
        with_session[3],
        ("authorization", "Bearer sk-live-secret-1"),
        ("cookie", "sid=cookie-secret-2"),
        ("x-tenant", "tenant-secret-3"),
    ];
    let (status, _, body) = http(
        &addr,
        "POST",
        "/mcp",
        &with_secrets,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"via http"}}}"#,
    );
    assert_eq!(status, 200);
    assert!(body.contains("Echo: via http"), "{body}");

    let (status, _, body) = http(&addr, "GET", "/health", &[], "");
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, _, metrics) = http(&addr, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(metrics.contains("tessera_sessions_live"), "{metrics}");
    assert!(
        metrics.contains("tessera_mcp_request_duration_seconds"),
        "{metrics}"
    );

    // SIGTERM: the proxy stops accepting, ends the session (stopping its child) and exits cleanly.
    let killed = Command::new("kill")
        .args(["-TERM", &proxy.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = proxy.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // The tape has the call's headers, its credentials (and the --redact-header one) redacted.
    let text = std::fs::read_to_string(&tape).unwrap();
    for secret in ["sk-live-secret-1", "cookie-secret-2", "tenant-secret-3"] {
        assert!(!text.contains(secret), "{secret} leaked into the tape");
    }
    let call = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["type"] == "http" && r["id"] == 2)
        .expect("an http record for the call");
    assert_eq!(call["method"], "tools/call");
    for name in ["authorization", "cookie", "x-tenant"] {
        assert_eq!(call["headers"][name], "[REDACTED]", "{call}");
    }
    assert_eq!(call["headers"]["mcp-protocol-version"], "2025-06-18");
    let _ = std::fs::remove_dir_all(&dir);
}
