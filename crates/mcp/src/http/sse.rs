//! Server-Sent Events: an incremental parser that watches a stream pass (the bytes are forwarded untouched)
//! and an encoder for the events the proxy writes itself.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// Whether a `Content-Type` value names an event stream (media types compare case-insensitively, RFC
/// 9110 §8.3.1: an upstream answering `Text/Event-Stream` is still streaming events).
pub(crate) fn is_event_stream(content_type: &str) -> bool {
    const EVENT_STREAM: &str = "text/event-stream";
    content_type
        .get(..EVENT_STREAM.len())
        .is_some_and(|v| v.eq_ignore_ascii_case(EVENT_STREAM))
}

/// How many times in a row a client of the proxy's (`connect`, the old transport's translation) opens a
/// stream that ended again with `Last-Event-ID`.
pub const MAX_RESUMES: u32 = 8;
/// The wait before reconnecting when the server gave no `retry`.
pub const DEFAULT_RETRY: Duration = Duration::from_millis(500);
/// The longest `retry` honoured (a server asking for more is reconnected to after this).
pub const MAX_RETRY: Duration = Duration::from_secs(10);

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field (empty means `message`).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last event id (set by this event's `id:` field or an earlier event's), as a client would send
    /// it in `Last-Event-ID`.
    pub id: Option<String>,
}

/// An incremental SSE parser, following the event-stream rules: a line ends at CR LF, LF or CR; an empty
/// line dispatches the event; `data:` lines join with LF, and an event without data is not dispatched;
/// the `id:` field persists as the last event id. The result does not depend on how the stream is cut
/// into chunks.
///
/// Size limit: an event whose data, or any one of whose lines, is longer than `max_event` bytes is skipped
/// whole, up to the empty line that ends it; the parser never holds more than `max_event + 1` bytes of a
/// line.
#[derive(Debug)]
pub struct Parser {
    /// The bytes of the current line seen so far (the line began in an earlier chunk).
    partial: BytesMut,
    current: Event,
    has_data: bool,
    last_id: Option<String>,
    /// The reconnection time set by the last `retry:` field, in milliseconds.
    retry_ms: Option<u64>,
    max_event: usize,
    /// The current event is over the limit: its lines are skipped up to its end.
    overflow: bool,
    /// The current line is over the limit: its bytes are dropped up to its end.
    skip_line: bool,
    /// The last line ended with CR: an LF right after it is part of that line end.
    after_cr: bool,
    /// Bytes of a leading UTF-8 byte order mark matched so far; `None` once the stream's start is past.
    bom: Option<usize>,
}

/// A stream may begin with a UTF-8 byte order mark, which is not part of its first line.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Parser {
    /// A parser that skips events larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Parser {
            partial: BytesMut::new(),
            current: Event::default(),
            has_data: false,
            last_id: None,
            retry_ms: None,
            max_event,
            overflow: false,
            skip_line: false,
            after_cr: false,
            bom: Some(0),
        }
    }

    /// The last event id seen (an `id:` field of a complete or current event).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnection time the server asked for with a `retry:` field (ASCII digits), in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// How long to wait before reconnecting: the server's `retry`, [`DEFAULT_RETRY`] without one, at most
    /// [`MAX_RETRY`].
    pub fn reconnect_delay(&self) -> Duration {
        self.retry_ms
            .map_or(DEFAULT_RETRY, Duration::from_millis)
            .min(MAX_RETRY)
    }

    /// The size limit of one event.
    pub fn max_event(&self) -> usize {
        self.max_event
    }

    /// Feeds bytes; calls `on_event` for each complete event.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(Event)) {
        let mut input = chunk;
        while let Some(matched) = self.bom {
            match input.first() {
                None => return,
                Some(&b) if b == BOM[matched] => {
                    input = &input[1..];
                    self.bom = (matched + 1 < BOM.len()).then_some(matched + 1);
                }
                Some(_) => {
                    // Not a BOM after all: what matched begins the first line.
                    self.partial.extend_from_slice(&BOM[..matched]);
                    self.bom = None;
                }
            }
        }
        if self.after_cr && !input.is_empty() {
            self.after_cr = false;
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', input) {
            let piece = &input[..i];
            let cr = input[i] == b'\r';
            input = &input[i + 1..];
            if cr {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if std::mem::take(&mut self.skip_line) {
                continue;
            }
            if self.partial.is_empty() {
                self.line(piece, &mut on_event);
            } else {
                self.partial.extend_from_slice(piece);
                let line = self.partial.split();
                self.line(&line, &mut on_event);
            }
        }
        if self.skip_line || input.is_empty() {
            return;
        }
        // The start of a line whose end has not come yet: held, up to one byte past the limit.
        let room = (self.max_event + 1).saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&input[..input.len().min(room)]);
        if self.partial.len() > self.max_event {
            self.partial.clear();
            self.skip_line = true;
            self.overflow();
        }
    }

    /// One complete line, without its end.
    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(Event)) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line.len() > self.max_event {
            self.overflow();
            return;
        }
        if self.overflow || line[0] == b':' {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.has_data = true;
                self.current.data.push_str(&String::from_utf8_lossy(value));
                if self.current.data.len() > self.max_event {
                    self.overflow();
                }
            }
            b"event" => self.current.event = String::from_utf8_lossy(value).into_owned(),
            // An id holding NUL is ignored (the event-stream rules).
            b"id" if !value.contains(&0) => {
                self.last_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            // Only ASCII digits set the reconnection time; anything else is ignored (the rules).
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Some(ms) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }

    /// The current event is over the limit: dropped, and the rest of it skipped.
    fn overflow(&mut self) {
        self.overflow = true;
        self.current = Event::default();
        self.has_data = false;
    }

    /// An empty line: the event is complete.
    fn dispatch(&mut self, on_event: &mut impl FnMut(Event)) {
        let mut event = std::mem::take(&mut self.current);
        self.has_data = false;
        if std::mem::take(&mut self.overflow) || event.data.is_empty() {
            return;
        }
        event.id = self.last_id.clone();
        on_event(event);
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
    fn retry_takes_only_ascii_digits() {
        let mut p = Parser::new(1024);
        p.feed(b"retry: 250\n\n", |_| {});
        assert_eq!(p.retry_ms(), Some(250));
        p.feed(
            b"retry: 1s\nretry: -5\nretry:\nretry: 99999999999999999999999\n\n",
            |_| {},
        );
        assert_eq!(p.retry_ms(), Some(250));
        p.feed(b"retry:7\n\n", |_| {});
        assert_eq!(p.retry_ms(), Some(7));
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
        assert_eq!(p.last_event_id(), Some("4"));
        // The id persists: the next event without an id of its own carries it.
        p.feed(b"data: x\n\n", |e| got.push(e));
        assert_eq!(got[0].id.as_deref(), Some("4"));
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

    fn parse(max: usize, chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::new(max);
        let mut got = Vec::new();
        for chunk in chunks {
            p.feed(chunk, |e| got.push(e));
        }
        got
    }

    #[test]
    fn a_line_may_end_with_cr_alone_even_across_chunks() {
        let got = parse(
            1024,
            &[b"data: a\rdata: b\r", b"\r", b"data: c\r", b"\n\r\n"],
        );
        let data: Vec<_> = got.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["a\nb", "c"]);
    }

    #[test]
    fn empty_data_lines_join_as_the_rules_say() {
        // Two empty data lines make one LF; a single one makes no event.
        let got = parse(1024, &[b"data:\ndata:\n\ndata:\n\ndata:\ndata: x\n\n"]);
        let data: Vec<_> = got.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["\n", "\nx"]);
    }

    #[test]
    fn an_over_long_line_skips_its_event_whatever_the_chunks() {
        let text = b"data: 1\n: a comment longer than the limit\ndata: 2\n\ndata: ok\n\n";
        let whole = parse(16, &[text]);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].data, "ok");
        // Cut just before the over-long line's end: the rest must not read as an empty line.
        let cut = text.windows(8).position(|w| w == b"\ndata: 2").unwrap();
        let chunked = parse(16, &[&text[..cut], &text[cut..]]);
        assert_eq!(chunked, whole);
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped_whatever_the_chunks() {
        let text = b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n";
        let whole = parse(1024, &[text]);
        let data: Vec<_> = whole.iter().map(|e| e.data.as_str()).collect();
        // Only the stream's first bytes can be a mark; later, the same bytes start an unknown field.
        assert_eq!(data, ["a"]);
        for cut in 0..=text.len() {
            assert_eq!(
                parse(1024, &[&text[..cut], &text[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        // A first line that only begins like a mark keeps its bytes.
        let mut p = Parser::new(1024);
        p.feed(b"\xEF\xBBid: 1\n\ndata: x\n\n", |_| {});
        assert_eq!(p.last_event_id(), None);
    }

    proptest::proptest! {
        #[test]
        fn chunks_do_not_change_the_events(
            lines in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"data: {}"[..], b"data:", b"data: 0123456789abcdef0123", b"id: 7", b"id", b"event: e",
                    b": c", b"retry: 1", b"", b"x",
                ]),
                0..24,
            ),
            ends in proptest::collection::vec(proptest::sample::select(vec![&b"\n"[..], b"\r", b"\r\n"]), 24),
            step in 1usize..9,
            max in 1usize..40,
        ) {
            let mut text = Vec::new();
            for (line, end) in lines.iter().zip(&ends) {
                text.extend_from_slice(line);
                text.extend_from_slice(end);
            }
            let whole = parse(max, &[&text]);
            let chunks: Vec<&[u8]> = text.chunks(step).collect();
            proptest::prop_assert_eq!(parse(max, &chunks), whole);
        }
    }
}
