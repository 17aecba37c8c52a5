//! Tape tests: redaction, header records, the summary.

use super::*;

#[tokio::test]
async fn the_tape_redacts_by_name_and_by_path_and_keeps_the_message() {
    let path = std::env::temp_dir().join(format!("tessera-tape-{}.jsonl", std::process::id()));
    let config = TapeConfig {
        redact_paths: vec!["/params/arguments/query".into()],
        ..TapeConfig::default()
    };
    let (tape, writer) = Tape::create(&path, config).await.unwrap();
    let text = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"query":"private","password":"pw","n":3}}}"#;
    let message = Message::parse(bytes::Bytes::from_static(text.as_bytes())).unwrap();
    let meta = FrameMeta {
        session: SessionId::random(),
        frame_count: 1,
        session_duration_ms: 0,
        tags: crate::session::Tags::default(),
        labels: Vec::new(),
    };
    tape.frame(&meta, Direction::ClientToServer, &message, None);
    drop(tape);
    writer.finish().await.unwrap();
    let recorded = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let frame: Value = serde_json::from_str(recorded.lines().nth(1).unwrap()).unwrap();
    let args = &frame["message"]["params"]["arguments"];
    assert_eq!(
        (
            args["query"].as_str(),
            args["password"].as_str(),
            args["n"].as_u64()
        ),
        (Some("[REDACTED]"), Some("[REDACTED]"), Some(3))
    );
    assert_eq!(
        std::str::from_utf8(message.raw()).unwrap(),
        text,
        "the forwarded message is untouched"
    );
}

#[tokio::test]
async fn http_headers_are_recorded_with_credentials_redacted() {
    let dir = std::env::temp_dir().join(format!("tessera-tape-h-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("h.tape");
    let mut config = TapeConfig::default();
    config.redact_headers.push("X-Tenant".into());
    let (tape, writer) = Tape::create(&path, config).await.unwrap();
    let message = Message::parse(bytes::Bytes::from_static(
        br#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
    ))
    .unwrap();
    tape.http_request(
        None,
        "POST",
        "/mcp",
        Some(&message),
        [
            ("Authorization", &b"Bearer sk-live-123"[..]),
            ("cookie", b"sid=abc"),
            ("x-tenant", b"acme"),
            ("accept", b"application/json"),
            ("accept", b"text/event-stream"),
        ],
    );
    tape.http_response(
        None,
        "POST",
        "/mcp",
        200,
        [
            ("set-cookie", &b"sid=abc"[..]),
            ("x-tenant", b"acme"),
            ("content-type", b"application/json"),
        ],
    );
    drop(tape);
    writer.finish().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("sk-live-123") && !text.contains("sid=abc") && !text.contains("acme"));
    let answer: Value = serde_json::from_str(text.lines().nth(2).unwrap()).unwrap();
    assert_eq!(answer["type"], "http_response");
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["headers"]["set-cookie"], "[REDACTED]");
    assert_eq!(answer["headers"]["content-type"], "application/json");
    let record: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(record["type"], "http");
    assert_eq!(record["method"], "tools/list");
    assert_eq!(record["id"], 3);
    assert_eq!(record["headers"]["authorization"], "[REDACTED]");
    assert_eq!(record["headers"]["cookie"], "[REDACTED]");
    assert_eq!(record["headers"]["x-tenant"], "[REDACTED]");
    assert_eq!(
        record["headers"]["accept"],
        "application/json, text/event-stream"
    );
    let summary = summarize(text.as_bytes()).unwrap();
    assert_eq!(summary.bad_lines, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn redaction_reaches_every_depth_and_ignores_case() {
    let mut v = serde_json::json!({"params": {"arguments": {"Token": "s3cret", "list": [{"apiKey": "k"}], "keep": 1}}});
    redact(
        &mut v,
        &TapeConfig::default()
            .redact_keys
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect::<Vec<_>>(),
    );
    assert_eq!(v["params"]["arguments"]["Token"], "[REDACTED]");
    assert_eq!(v["params"]["arguments"]["list"][0]["apiKey"], "[REDACTED]");
    assert_eq!(v["params"]["arguments"]["keep"], 1);
}

#[test]
fn summary_counts_and_percentiles() {
    let mut tape = String::from(
        "{\"type\":\"init\",\"version\":1}\n{\"type\":\"session\",\"session\":\"a\"}\n",
    );
    for i in 1..=20u64 {
        tape.push_str(&format!(
            "{{\"type\":\"frame\",\"message\":{{\"id\":{i},\"result\":{{}}}}}}\n"
        ));
        tape.push_str(&format!(
            "{{\"type\":\"correlation\",\"method\":\"tools/call\",\"rtt_us\":{},\"error\":{}}}\n",
            i * 100,
            i == 20
        ));
    }
    tape.push_str(
        "{\"type\":\"frame\",\"message\":{\"id\":0,\"error\":{\"code\":-1}}}\nnot json\n",
    );
    let s = summarize(std::io::Cursor::new(tape)).unwrap();
    assert_eq!(
        (s.sessions, s.frames, s.error_frames, s.bad_lines),
        (1, 21, 1, 1)
    );
    assert_eq!(
        s.methods,
        vec![MethodSummary {
            method: "tools/call".into(),
            count: 20,
            errors: 1,
            p50_us: 1000,
            p95_us: 1900
        }]
    );
    assert!(s.to_string().contains("tools/call"));
}

/// A reader that hands out at most `n` bytes per `fill_buf`, so lines cross buffer boundaries.
struct Trickle<'a> {
    data: &'a [u8],
    n: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let k = self.n.min(out.len()).min(self.data.len());
        out[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        Ok(k)
    }
}

#[test]
fn summary_survives_bad_utf8_and_overlong_lines_in_bounded_memory() {
    let good = "{\"type\":\"correlation\",\"method\":\"ping\",\"rtt_us\":7}\n";
    let mut tape = Vec::new();
    tape.extend_from_slice(good.as_bytes());
    tape.extend_from_slice(b"{\"type\":\"frame\",\"message\":\"\xff\xfe\"}\n");
    // Longer than the limit below, with a valid record after it on the same stream.
    tape.extend_from_slice(
        format!("{{\"type\":\"frame\",\"pad\":\"{}\"}}\n", "x".repeat(500)).as_bytes(),
    );
    tape.extend_from_slice(good.as_bytes());
    tape.extend_from_slice(good.trim_end().as_bytes()); // the last line without its newline
    for chunk in [1, 3, 64, 4096] {
        let reader = std::io::BufReader::with_capacity(
            chunk,
            Trickle {
                data: &tape,
                n: chunk,
            },
        );
        let s = summarize_bounded(reader, 200).unwrap();
        assert_eq!((s.frames, s.bad_lines), (0, 2), "chunk {chunk}");
        assert_eq!(s.methods.len(), 1);
        assert_eq!((s.methods[0].count, s.methods[0].p50_us), (3, 7));
    }
}

#[test]
fn summary_caps_distinct_methods() {
    let mut tape = String::new();
    for i in 0..MAX_SUMMARY_METHODS + 10 {
        tape.push_str(&format!(
            "{{\"type\":\"correlation\",\"method\":\"m{i}\",\"rtt_us\":1}}\n"
        ));
    }
    let s = summarize(tape.as_bytes()).unwrap();
    assert_eq!(s.methods.len(), MAX_SUMMARY_METHODS + 1);
    let other = s.methods.iter().find(|m| m.method == "(other)").unwrap();
    assert_eq!(other.count, 10);
}

/// A tape holds tool arguments and results: a new one is readable by its owner only, and a symbolic
/// link where the tape should go is refused rather than followed (to another user's file, say).
#[tokio::test]
async fn a_tape_is_private_and_never_written_through_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tessera-tape-mode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("private.tape");
    let (tape, writer) = Tape::create(&path, TapeConfig::default()).await.unwrap();
    drop(tape);
    writer.finish().await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let target = dir.join("elsewhere");
    std::fs::write(&target, "keep me").unwrap();
    let link = dir.join("link.tape");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(Tape::create(&link, TapeConfig::default()).await.is_err());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    let _ = std::fs::remove_dir_all(&dir);
}
