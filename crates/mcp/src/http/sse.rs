//! Server-Sent Events: an incremental parser that watches a stream pass (the bytes are forwarded untouched)
//! and an encoder for the events the proxy writes itself.

use bytes::{Bytes, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field (empty means `message`).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// An incremental SSE parser with a limit on the size of one event.
#[derive(Debug)]
pub struct Parser {
    buf: BytesMut,
    current: Event,
    max_event: usize,
    overflow: bool,
}

impl Parser {
    /// A parser that skips events larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Parser {
            buf: BytesMut::new(),
            current: Event::default(),
            max_event,
            overflow: false,
        }
    }

    /// Feeds bytes; calls `on_event` for each complete event.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(Event)) {
        self.buf.extend_from_slice(chunk);
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(end + 1);
            let mut line = &line[..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                let event = std::mem::take(&mut self.current);
                if !self.overflow && !event.data.is_empty() {
                    on_event(event);
                }
                self.overflow = false;
                continue;
            }
            if line[0] == b':' || self.overflow {
                continue;
            }
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &b""[..]),
            };
            let value = String::from_utf8_lossy(value);
            match name {
                b"data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(&value);
                    if self.current.data.len() > self.max_event {
                        self.overflow = true;
                        self.current = Event::default();
                    }
                }
                b"event" => self.current.event = value.into_owned(),
                b"id" => self.current.id = Some(value.into_owned()),
                _ => {}
            }
        }
        if self.buf.len() > self.max_event {
            self.buf.clear();
            self.overflow = true;
        }
    }
}

/// Encodes one `message` event carrying a JSON-RPC message (which has no raw newlines: see
/// [`crate::Message::line_safe`]).
pub fn message_event(data: &[u8], id: Option<&str>) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 32);
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// A priming event (2025-11-25): an id and an empty `data`, so that a client that loses the stream before any
/// message can still reconnect with `Last-Event-ID`; with `retry`, how many ms it should wait first.
pub fn priming_event(id: &str, retry_ms: Option<u64>) -> Bytes {
    let retry = retry_ms
        .map(|ms| format!("retry: {ms}\n"))
        .unwrap_or_default();
    Bytes::from(format!("id: {id}\n{retry}data:\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_across_chunks_and_skips_comments() {
        let mut p = Parser::new(1024);
        let mut got = Vec::new();
        for chunk in [
            &b": keep-alive\n\nid: 1\r\nevent: message\r\ndata: {\"a\""[..],
            b":1}\r\n\r\n",
            b"data: x\ndata: y\n\nid: 2\ndata:\n\n",
        ] {
            p.feed(chunk, |e| got.push(e));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Event {
                event: "message".into(),
                data: "{\"a\":1}".into(),
                id: Some("1".into())
            }
        );
        assert_eq!(got[1].data, "x\ny");
    }

    #[test]
    fn skips_oversized_events_and_recovers() {
        let mut p = Parser::new(8);
        let mut got = Vec::new();
        p.feed(b"data: 0123456789abc\n\ndata: ok\n\n", |e| got.push(e.data));
        assert_eq!(got, ["ok"]);
    }

    #[test]
    fn a_priming_event_has_an_id_and_no_data() {
        let mut p = Parser::new(1024);
        let mut got = Vec::new();
        let primed = priming_event("4", Some(3000));
        assert_eq!(&primed[..], b"id: 4\nretry: 3000\ndata:\n\n");
        // An event with empty data is not dispatched (the SSE rules); only its id counts, client-side.
        p.feed(&primed, |e| got.push(e));
        assert!(got.is_empty());
    }

    #[test]
    fn encodes_what_it_parses() {
        let mut p = Parser::new(1024);
        let mut got = Vec::new();
        p.feed(&message_event(b"{\"x\":1}", Some("7")), |e| got.push(e));
        assert_eq!(
            got,
            [Event {
                event: "message".into(),
                data: "{\"x\":1}".into(),
                id: Some("7".into())
            }]
        );
    }
}
