//! Recordings ("tapes"): JSON lines, one record per line, written by one task.
//!
//! Records:
//! * `{"type":"init","version":1,"started_unix_ms":…}` — first line;
//! * `{"type":"session","t_ms":…,"session":"…","transport":"stdio"}` — a session began;
//! * `{"type":"frame","seq":…,"t_ms":…,"session":"…","dir":"c2s","frame_count":…,"tags":[…],"message":{…}}`
//!   — a message as it passed (`message` is the raw JSON, after redaction);
//! * `{"type":"http","t_ms":…,"session":…,"http":"POST","path":"/mcp","method":…,"id":…,"headers":{…}}` —
//!   the headers of the HTTP request that carried the next frame (HTTP front only: `/mcp`, and the old
//!   transport's `/sse` and `/message`), with credentials redacted;
//! * `{"type":"http_response","t_ms":…,"session":…,"http":"POST","path":"/mcp","status":200,"headers":{…}}`
//!   — the status and headers the proxy answered an HTTP request with, redacted the same way;
//! * `{"type":"correlation","seq":…,"session":"…","method":"…","rtt_us":…,"error":false}` — the frame `seq`
//!   answered a request of `method` after `rtt_us`.
//!
//! Redaction: every object member whose name is in [`TapeConfig::redact_keys`] (compared without case; by
//! default `authorization`, `token`, `password`, `secret`, `apiKey`, `api_key`) has its value replaced by
//! `"[REDACTED]"` in the tape, and so has every value at a JSON pointer of [`TapeConfig::redact_paths`]
//! (e.g. `/params/arguments/query`) — the forwarded message is never touched. HTTP request headers named in
//! [`TapeConfig::redact_headers`] (by default [`DEFAULT_REDACTED_HEADERS`]: `Authorization`, `Cookie`, API
//! keys, …) are recorded as `"[REDACTED]"`, in requests and responses alike. The queue is bounded: when the disk
//! cannot keep up, records are dropped and counted rather than slowing the proxy.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::McpError;
use crate::jsonrpc::Message;
use crate::session::{Correlated, Direction, FrameMeta};
use tessera_session::SessionId;

/// What to record and how.
#[derive(Debug, Clone)]
pub struct TapeConfig {
    /// Member names whose values are redacted (case-insensitive).
    pub redact_keys: Vec<String>,
    /// JSON pointers (RFC 6901) into a message whose values are redacted.
    pub redact_paths: Vec<String>,
    /// HTTP request headers whose values are redacted (case-insensitive).
    pub redact_headers: Vec<String>,
    /// Most records queued for the writer.
    pub queue: usize,
}

impl Default for TapeConfig {
    fn default() -> Self {
        TapeConfig {
            redact_keys: [
                "authorization",
                "token",
                "password",
                "secret",
                "apiKey",
                "api_key",
            ]
            .map(String::from)
            .to_vec(),
            redact_paths: Vec::new(),
            redact_headers: DEFAULT_REDACTED_HEADERS.map(String::from).to_vec(),
            queue: 4096,
        }
    }
}

/// Request headers redacted by default: credentials and cookies.
pub const DEFAULT_REDACTED_HEADERS: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-amz-security-token",
];

/// Most headers recorded per request, and the longest value kept (longer ones are cut).
const MAX_HEADERS: usize = 64;
const MAX_HEADER_VALUE: usize = 1024;

struct Inner {
    tx: mpsc::Sender<String>,
    start: Instant,
    seq: AtomicU64,
    dropped: AtomicU64,
    redact: Vec<String>,
    redact_paths: Vec<String>,
    redact_headers: Vec<String>,
}

/// A handle for recording; cheap to clone.
#[derive(Clone)]
pub struct Tape {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tape")
            .field("seq", &self.inner.seq.load(Ordering::Relaxed))
            .finish()
    }
}

/// The tape's writer task: [`TapeWriter::finish`] waits until every record is on disk.
#[derive(Debug)]
pub struct TapeWriter {
    join: JoinHandle<std::io::Result<()>>,
}

impl TapeWriter {
    /// Waits for the writer to write everything and stop; call after every [`Tape`] clone is dropped.
    pub async fn finish(self) -> std::io::Result<()> {
        self.join.await.map_err(std::io::Error::other)?
    }
}

impl Tape {
    /// Creates (truncates) the tape file and starts its writer. A new file is readable by its owner only
    /// (mode 0600: tapes hold tool arguments and results); a symbolic link at `path` is refused, not
    /// followed.
    pub async fn create(path: &Path, config: TapeConfig) -> Result<(Tape, TapeWriter), McpError> {
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .await
            .map_err(|e| McpError::Tape(path.display().to_string(), e.to_string()))?;
        let (tx, mut rx) = mpsc::channel::<String>(config.queue.max(1));
        let join = tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(file);
            while let Some(line) = rx.recv().await {
                out.write_all(line.as_bytes()).await?;
                out.write_all(b"\n").await?;
                if rx.is_empty() {
                    out.flush().await?;
                }
            }
            out.flush().await
        });
        let tape = Tape {
            inner: Arc::new(Inner {
                tx,
                start: Instant::now(),
                seq: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                redact: config
                    .redact_keys
                    .iter()
                    .map(|k| k.to_ascii_lowercase())
                    .collect(),
                redact_paths: config.redact_paths.clone(),
                redact_headers: config
                    .redact_headers
                    .iter()
                    .map(|k| k.to_ascii_lowercase())
                    .collect(),
            }),
        };
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        tape.push(serde_json::json!({"type": "init", "version": 1, "started_unix_ms": unix_ms}));
        Ok((tape, TapeWriter { join }))
    }

    fn t_ms(&self) -> u64 {
        u64::try_from(self.inner.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn push(&self, record: Value) {
        if self.inner.tx.try_send(record.to_string()).is_err() {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Records the start of a session.
    pub fn session_started(&self, session: SessionId, transport: &str) {
        self.push(serde_json::json!({
            "type": "session", "t_ms": self.t_ms(), "session": session.to_string(), "transport": transport,
        }));
    }

    /// Records the headers of an HTTP request that carried `message` (before its frame), redacted:
    /// `{"type":"http","t_ms":…,"session":…|null,"http":"POST","path":"/mcp","method":…,"id":…,"headers":{…}}`.
    /// Repeated headers are joined with ", "; at most 64 headers, values cut at 1024 bytes.
    pub fn http_request<'a>(
        &self,
        session: Option<SessionId>,
        http_method: &str,
        path: &str,
        message: Option<&Message>,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) {
        let recorded = self.headers(headers);
        let id = message
            .and_then(Message::id)
            .and_then(|id| serde_json::from_str::<Value>(id.as_json()).ok());
        self.push(serde_json::json!({
            "type": "http", "t_ms": self.t_ms(), "session": session.map(|s| s.to_string()),
            "http": http_method, "path": path, "method": message.and_then(Message::method), "id": id,
            "headers": recorded,
        }));
    }

    /// Records the status and headers of the proxy's answer to an HTTP request, redacted as request headers
    /// are (`Set-Cookie` among the defaults):
    /// `{"type":"http_response","t_ms":…,"session":…|null,"http":"POST","path":"/mcp","status":200,"headers":{…}}`.
    pub fn http_response<'a>(
        &self,
        session: Option<SessionId>,
        http_method: &str,
        path: &str,
        status: u16,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) {
        let recorded = self.headers(headers);
        self.push(serde_json::json!({
            "type": "http_response", "t_ms": self.t_ms(), "session": session.map(|s| s.to_string()),
            "http": http_method, "path": path, "status": status, "headers": recorded,
        }));
    }

    /// Headers as a JSON object: names lowercased, credentials redacted, repeats joined, bounded.
    fn headers<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> serde_json::Map<String, Value> {
        let mut recorded = serde_json::Map::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if !recorded.contains_key(&name) && recorded.len() >= MAX_HEADERS {
                continue;
            }
            let text = if self.inner.redact_headers.contains(&name) {
                "[REDACTED]".to_owned()
            } else {
                let cut = &value[..value.len().min(MAX_HEADER_VALUE)];
                String::from_utf8_lossy(cut).into_owned()
            };
            match recorded.get_mut(&name) {
                Some(Value::String(previous)) if text != "[REDACTED]" => {
                    previous.push_str(", ");
                    previous.push_str(&text);
                }
                Some(_) => {}
                None => {
                    recorded.insert(name, Value::String(text));
                }
            }
        }
        recorded
    }

    /// Records the interception rules that matched a message:
    /// `{"type":"rule","t_ms":…,"session":…,"dir":…,"method":…,"id":…,"rules":[…],"blocked":bool}`.
    pub fn rules(
        &self,
        session: Option<SessionId>,
        direction: Direction,
        message: &Message,
        verdict: &crate::rules::Verdict,
    ) {
        let id = message
            .id()
            .and_then(|id| serde_json::from_str::<Value>(id.as_json()).ok());
        self.push(serde_json::json!({
            "type": "rule", "t_ms": self.t_ms(), "session": session.map(|s| s.to_string()),
            "dir": direction.label(), "method": message.method(), "id": id,
            "rules": verdict.matched.iter().map(|m| &**m).collect::<Vec<_>>(),
            "blocked": verdict.block.is_some(),
        }));
    }

    /// Records a frame, and its correlation if it is a matched response.
    pub fn frame(
        &self,
        meta: &FrameMeta,
        direction: Direction,
        message: &Message,
        correlated: Option<&Correlated>,
    ) {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut body: Value = serde_json::from_slice(message.raw()).unwrap_or(Value::Null);
        redact(&mut body, &self.inner.redact);
        for path in &self.inner.redact_paths {
            if let Some(v) = body.pointer_mut(path) {
                *v = Value::from("[REDACTED]");
            }
        }
        let session = meta.session.to_string();
        self.push(serde_json::json!({
            "type": "frame", "seq": seq, "t_ms": self.t_ms(), "session": session, "dir": direction.label(),
            "frame_count": meta.frame_count, "session_duration_ms": meta.session_duration_ms,
            "tags": meta.tags.names().map(str::to_owned)
                .chain(meta.labels.iter().map(|l| l.to_string())).collect::<Vec<_>>(),
            "message": body,
        }));
        if let Some(c) = correlated {
            self.push(serde_json::json!({
                "type": "correlation", "seq": seq, "session": session, "method": c.method,
                "rtt_us": u64::try_from(c.rtt.as_micros()).unwrap_or(u64::MAX), "error": message.is_error(),
            }));
        }
    }
}

/// Replaces the values of members named in `keys` (lowercase) with `"[REDACTED]"`, at any depth.
pub fn redact(value: &mut Value, keys: &[String]) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if keys.iter().any(|r| r.eq_ignore_ascii_case(k)) {
                    *v = Value::from("[REDACTED]");
                } else {
                    redact(v, keys);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, keys)),
        _ => {}
    }
}

/// Latency figures of one method in a tape.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSummary {
    /// The method.
    pub method: String,
    /// Responses matched to its requests.
    pub count: usize,
    /// Of those, errors.
    pub errors: usize,
    /// Median round trip, µs.
    pub p50_us: u64,
    /// 95th percentile round trip, µs.
    pub p95_us: u64,
}

/// What `tessera mcp tape show` prints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TapeSummary {
    /// Sessions recorded.
    pub sessions: usize,
    /// Frames recorded.
    pub frames: usize,
    /// Error responses among the frames.
    pub error_frames: usize,
    /// Lines that were not valid records.
    pub bad_lines: usize,
    /// Per method, sorted by name.
    pub methods: Vec<MethodSummary>,
    /// Per interception rule: (messages it matched, messages blocked by a chain it was in), by name (at
    /// most [`crate::rules::MAX_RULES`] names; the rest under `(other)`).
    pub rules: std::collections::BTreeMap<String, (usize, usize)>,
}

impl std::fmt::Display for TapeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "sessions: {}  frames: {}  error responses: {}",
            self.sessions, self.frames, self.error_frames
        )?;
        if self.bad_lines > 0 {
            writeln!(f, "unreadable lines: {}", self.bad_lines)?;
        }
        writeln!(
            f,
            "{:<28} {:>7} {:>7} {:>10} {:>10}",
            "method", "count", "errors", "p50 µs", "p95 µs"
        )?;
        for m in &self.methods {
            writeln!(
                f,
                "{:<28} {:>7} {:>7} {:>10} {:>10}",
                m.method, m.count, m.errors, m.p50_us, m.p95_us
            )?;
        }
        if !self.rules.is_empty() {
            writeln!(f, "{:<28} {:>7} {:>7}", "rule", "matched", "blocked")?;
            for (name, (matched, blocked)) in &self.rules {
                writeln!(f, "{name:<28} {matched:>7} {blocked:>7}")?;
            }
        }
        Ok(())
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The longest tape line [`summarize`] reads (a frame carries one message, 16 MiB by default, plus its
/// record); a longer one is skipped to its end and counted as a bad line.
pub const MAX_TAPE_LINE: usize = 64 * 1024 * 1024;

/// Most distinct methods a summary lists; the rest are counted under `(other)`.
pub const MAX_SUMMARY_METHODS: usize = 1000;

/// Reads the next line (without its `\n`) into `buf`, never holding more than `max` bytes of it: `None` at
/// the end of the input, `Some(false)` for a line longer than `max` (skipped to its end).
fn read_bounded_line(
    reader: &mut impl std::io::BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut fits = true;
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(any.then_some(fits));
        }
        any = true;
        let (part, end) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if fits && buf.len() + part.len() <= max {
            buf.extend_from_slice(part);
        } else {
            fits = false;
            buf.clear();
        }
        let used = end.unwrap_or(available.len());
        reader.consume(used);
        if end.is_some() {
            return Ok(Some(fits));
        }
    }
}

/// Summarizes a tape read line by line. Memory stays bounded whatever the file holds: one line of at most
/// [`MAX_TAPE_LINE`] at a time, the round trips of at most [`MAX_SUMMARY_METHODS`] methods. A line that is
/// not a tape record (not JSON, not UTF-8, too long, an unknown type) is counted, not fatal.
pub fn summarize(reader: impl std::io::BufRead) -> std::io::Result<TapeSummary> {
    summarize_bounded(reader, MAX_TAPE_LINE)
}

fn summarize_bounded(
    mut reader: impl std::io::BufRead,
    max_line: usize,
) -> std::io::Result<TapeSummary> {
    use std::collections::BTreeMap;
    let mut summary = TapeSummary::default();
    let mut per_method: BTreeMap<String, (Vec<u64>, usize)> = BTreeMap::new();
    let mut line = Vec::new();
    while let Some(fits) = read_bounded_line(&mut reader, &mut line, max_line)? {
        if !fits {
            summary.bad_lines += 1;
            continue;
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<Value>(&line) else {
            summary.bad_lines += 1;
            continue;
        };
        match record.get("type").and_then(Value::as_str) {
            Some("session") => summary.sessions += 1,
            Some("frame") => {
                summary.frames += 1;
                if record.pointer("/message/error").is_some() {
                    summary.error_frames += 1;
                }
            }
            Some("correlation") => {
                let mut method = record
                    .get("method")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned();
                if !per_method.contains_key(&method) && per_method.len() >= MAX_SUMMARY_METHODS {
                    method = "(other)".to_owned();
                }
                let rtt = record.get("rtt_us").and_then(Value::as_u64).unwrap_or(0);
                let entry = per_method.entry(method).or_default();
                entry.0.push(rtt);
                if record.get("error").and_then(Value::as_bool) == Some(true) {
                    entry.1 += 1;
                }
            }
            Some("rule") => {
                let blocked = record.get("blocked").and_then(Value::as_bool) == Some(true);
                let names = record.get("rules").and_then(Value::as_array);
                for name in names.into_iter().flatten().filter_map(Value::as_str) {
                    let known = summary.rules.contains_key(name);
                    let key = if known || summary.rules.len() < crate::rules::MAX_RULES {
                        name.to_owned()
                    } else {
                        "(other)".to_owned()
                    };
                    let entry = summary.rules.entry(key).or_default();
                    entry.0 += 1;
                    entry.1 += usize::from(blocked);
                }
            }
            Some("init" | "http" | "http_response") => {}
            _ => summary.bad_lines += 1,
        }
    }
    summary.methods = per_method
        .into_iter()
        .map(|(method, (mut rtts, errors))| {
            rtts.sort_unstable();
            MethodSummary {
                method,
                count: rtts.len(),
                errors,
                p50_us: percentile(&rtts, 50.0),
                p95_us: percentile(&rtts, 95.0),
            }
        })
        .collect();
    Ok(summary)
}

#[cfg(test)]
mod tests;
