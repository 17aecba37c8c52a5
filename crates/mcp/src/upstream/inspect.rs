//! What a URL upstream's responses carry, read as they pass: each server message is correlated, tracked and
//! recorded. With interception rules ([`crate::rules`]) an SSE body is passed on event by event, each
//! event's bytes unchanged, so that one a rule blocks can be left out: a blocked server request is answered
//! upstream with the rule's error, a blocked notification is dropped. A JSON body is held until it ends
//! and passed only if no rule blocks it (a client acts on whatever message a body carries). Without rules
//! chunks pass as they come.

use bytes::{Bytes, BytesMut};

use super::http::CancelUpstream;
use crate::http::sse;
use crate::jsonrpc::{Id, Kind, Message};
use crate::metrics;
use crate::rules::RuleSet;
use crate::session::{Direction, McpSession};
use crate::tape::Tape;

/// Reads the messages of a response as they pass.
pub(crate) struct Inspector {
    mcp: McpSession,
    sse: Option<sse::Parser>,
    json: BytesMut,
    max: usize,
    tape: Option<Tape>,
    /// (request id, pending key) of a request tracked under a key of the proxy's.
    keyed: Option<(Id, Id)>,
    rules: RuleSet,
    /// Where a blocked server request's error goes.
    replies: Option<CancelUpstream>,
    /// With rules on an SSE body: the event not yet complete.
    held: Option<Held>,
    /// With rules on a JSON body: the body is held until it ends.
    hold_json: bool,
    /// What was left out of the body, if anything.
    left_out: Option<LeftOut>,
}

/// Why a message was left out of what passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeftOut {
    /// Over the message limit: too long for the rules to see whole.
    Oversized,
    /// A held JSON body whose message a rule blocked.
    Blocked,
}

/// With rules on an SSE body: the bytes of the event not yet complete, how far they were scanned, and
/// whether an over-long event is being dropped.
#[derive(Default)]
struct Held {
    bytes: BytesMut,
    scanned: usize,
    dropping: Option<Skip>,
    /// A dropped event ended with CR at the end of a chunk: an LF right after it is dropped too.
    lf_after_drop: bool,
}

impl Inspector {
    pub(crate) fn new(
        mcp: McpSession,
        is_sse: bool,
        max: usize,
        tape: Option<Tape>,
        keyed: Option<(Id, Id)>,
    ) -> Self {
        Inspector {
            mcp,
            sse: is_sse.then(|| sse::Parser::new(max)),
            json: BytesMut::new(),
            max,
            tape,
            keyed,
            rules: RuleSet::none(),
            replies: None,
            held: None,
            hold_json: false,
            left_out: None,
        }
    }

    /// Runs `rules` over the server's messages (an SSE body is then passed on event by event).
    pub(crate) fn with_rules(mut self, rules: RuleSet, replies: CancelUpstream) -> Self {
        if rules.is_active() {
            if self.sse.is_some() {
                self.held = Some(Held::default());
            } else {
                self.hold_json = true;
            }
        }
        self.rules = rules;
        self.replies = Some(replies);
        self
    }

    /// Takes a chunk of the body; returns what to pass on now.
    pub(crate) fn pass(&mut self, chunk: Bytes) -> Bytes {
        if self.hold_json {
            if self.left_out.is_none() && !self.feed(&chunk) {
                // Past the limit (fail closed, as for an SSE event): the body is left out whole.
                self.json.clear();
                self.oversized();
            }
            return Bytes::new();
        }
        let Some(mut held) = self.held.take() else {
            self.feed(&chunk);
            return chunk;
        };
        let mut rest = &chunk[..];
        if let Some(skip) = &mut held.dropping {
            match skip.event_end(rest) {
                Some(end) => {
                    rest = &rest[end..];
                    held.dropping = None;
                    held.lf_after_drop = rest.is_empty() && chunk.last() == Some(&b'\r');
                    if chunk[end - 1] == b'\r' && rest.first() == Some(&b'\n') {
                        rest = &rest[1..];
                    }
                }
                None => rest = &[],
            }
        } else if held.lf_after_drop && !rest.is_empty() {
            held.lf_after_drop = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        held.bytes.extend_from_slice(rest);
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&held.bytes, &mut held.scanned) {
            let event = held.bytes.split_to(end);
            held.scanned = 0;
            if event.len() > self.max {
                self.oversized();
                continue;
            }
            if self.feed(&event) {
                out.extend_from_slice(&event);
            }
        }
        if held.bytes.len() > self.max {
            // Too long for the rules to see whole: the event is dropped up to its end (fail closed: passing
            // it on uninspected would let an upstream slip a message past the rules). So is a complete one
            // over the limit, above.
            self.oversized();
            held.dropping = Some(Skip::after(&held.bytes));
            held.bytes.clear();
            held.scanned = 0;
        }
        self.held = Some(held);
        out.freeze()
    }

    /// Whether a message was left out of what passed (and why): over the limit, or a held JSON body a
    /// rule blocked.
    pub(crate) fn left_out(&self) -> Option<LeftOut> {
        self.left_out
    }

    /// A message over the message limit, which the rules cannot see whole: it is left out.
    fn oversized(&mut self) {
        self.left_out = Some(LeftOut::Oversized);
        tracing::warn!(
            session = %self.mcp.id(),
            limit = self.max,
            "a message from the upstream is over the message limit: dropped"
        );
        metrics::malformed(Direction::ServerToClient);
    }

    /// Feeds bytes to the parser; false if an event in them was blocked by a rule (or, for a JSON body,
    /// the body grew past the limit).
    fn feed(&mut self, chunk: &[u8]) -> bool {
        let mut keep = true;
        match &mut self.sse {
            Some(parser) => {
                let mut events = Vec::new();
                parser.feed(chunk, |event| events.push(event));
                for event in events {
                    keep &= self.seen(Bytes::from(event.data));
                }
            }
            None if self.json.len() + chunk.len() <= self.max => self.json.extend_from_slice(chunk),
            None => keep = false,
        }
        keep
    }

    /// The body ended: what is still held, and the JSON body's message.
    pub(crate) fn finish(&mut self) -> Bytes {
        if self.hold_json {
            let body = std::mem::take(&mut self.json).freeze();
            if self.left_out.is_some() || body.is_empty() {
                return Bytes::new();
            }
            if self.seen(body.clone()) {
                return body;
            }
            self.left_out = Some(LeftOut::Blocked);
            return Bytes::new();
        }
        if self.sse.is_none() && !self.json.is_empty() {
            let body = std::mem::take(&mut self.json).freeze();
            self.seen(body);
        }
        match self.held.take() {
            Some(mut held) if !held.bytes.is_empty() => {
                let rest = held.bytes.split().freeze();
                if self.feed(&rest) { rest } else { Bytes::new() }
            }
            _ => Bytes::new(),
        }
    }

    /// One server message seen on a response or stream; false if a rule blocked it.
    fn seen(&self, data: Bytes) -> bool {
        let (mcp, tape) = (&self.mcp, self.tape.as_ref());
        let Ok(message) = Message::parse(data) else {
            metrics::malformed(Direction::ServerToClient);
            return true;
        };
        if let Some(rules) = self.rules.current()
            && let Some(verdict) =
                crate::rules::apply(&rules, Some(mcp), Direction::ServerToClient, &message, tape)
            && let Some(reply) = crate::rules::blocked_reply(&message, &verdict)
        {
            if let (Some(error), Some(replies)) = (reply, &self.replies) {
                replies.clone().send(error);
            }
            // The event is left out (rules make an SSE body pass event by event; a JSON body holds a
            // response, which no rule matches).
            return false;
        }
        let meta = mcp.observe(&message);
        metrics::frame(Direction::ServerToClient);
        let mut correlated = None;
        match message.kind() {
            Kind::Response { .. } => {
                let key = self
                    .keyed
                    .as_ref()
                    .filter(|(id, _)| message.id() == Some(id))
                    .map(|(_, key)| key);
                correlated = mcp.correlate_response_as(Direction::ServerToClient, &message, key);
            }
            Kind::Request { .. } => {
                // Tracked so the client's answer is recognized; the upstream keeps its own deadline.
                drop(mcp.track_request(Direction::ServerToClient, &message));
            }
            Kind::Notification { method } if &**method == "notifications/cancelled" => {
                mcp.cancelled_by(Direction::ServerToClient, &message);
            }
            _ => {}
        }
        if let Some(tape) = tape {
            tape.frame(
                &meta,
                Direction::ServerToClient,
                &message,
                correlated.as_ref(),
            );
        }
        true
    }
}

/// The end (exclusive) of the first complete SSE event in `buf`: just past the empty line that ends it.
/// A line ends at CR LF, LF or CR (the event-stream rules, as clients read them: splitting otherwise would
/// let an upstream hide an event from the rules). A CR as the last byte of a non-empty line waits for the
/// next byte, so that its LF is never read as an empty line. `scanned` is where the search resumes (a line
/// start); it is moved on when nothing is complete yet.
fn event_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let mut line_start = *scanned;
    while let Some(i) = buf[line_start..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
    {
        let end = line_start + i;
        if end == line_start {
            // An empty line (a CR LF's LF, if it comes, is read as the next event's first byte: an empty
            // line there, which dispatches nothing).
            let lf = buf[end] == b'\r' && buf.get(end + 1) == Some(&b'\n');
            return Some(end + 1 + usize::from(lf));
        }
        line_start = match (buf[end], buf.get(end + 1)) {
            (b'\r', Some(b'\n')) => end + 2,
            (b'\r', None) => break,
            _ => end + 1,
        };
    }
    *scanned = line_start;
    None
}

/// Finds the end of an event whose bytes are being dropped, across chunks, without holding them.
struct Skip {
    /// The last byte seen ended a line.
    at_line_start: bool,
    /// The last byte seen was a CR (an LF right after it belongs to the same line end).
    after_cr: bool,
}

impl Skip {
    /// The state after `bytes`, the start of an event that holds no empty line.
    fn after(bytes: &[u8]) -> Skip {
        let last = bytes.last().copied();
        Skip {
            at_line_start: matches!(last, Some(b'\n' | b'\r')),
            after_cr: last == Some(b'\r'),
        }
    }

    /// Just past the empty line that ends the event, if it is in `bytes`.
    fn event_end(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            if b == b'\n' || b == b'\r' {
                if self.at_line_start {
                    return Some(i + 1);
                }
                self.at_line_start = true;
                self.after_cr = b == b'\r';
            } else {
                self.at_line_start = false;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{Skip, event_end};

    #[test]
    fn events_end_at_an_empty_line_across_chunks() {
        let mut scanned = 0;
        let text = b"id: 1\ndata: {}\n\nid: 2\r\ndata: x\r\n\r\ndata: partial\n";
        let first = event_end(text, &mut scanned).unwrap();
        assert_eq!(&text[..first], b"id: 1\ndata: {}\n\n");
        let mut scanned = 0;
        let rest = &text[first..];
        let second = event_end(rest, &mut scanned).unwrap();
        assert_eq!(&rest[..second], b"id: 2\r\ndata: x\r\n\r\n");
        let mut scanned = 0;
        let tail = &rest[second..];
        assert_eq!(event_end(tail, &mut scanned), None);
        assert_eq!(scanned, tail.len());
    }

    #[test]
    fn a_cr_alone_ends_a_line_and_a_split_cr_lf_is_not_an_empty_line() {
        let mut scanned = 0;
        assert_eq!(event_end(b"data: a\r\rdata: b", &mut scanned), Some(9));
        // "data: a" then CR at the end: its LF may follow, so nothing is complete yet...
        let mut scanned = 0;
        assert_eq!(event_end(b"data: a\r", &mut scanned), None);
        assert_eq!(scanned, 0);
        // ...and when it does, the line ends there, not an event.
        assert_eq!(event_end(b"data: a\r\ndata: b\r", &mut scanned), None);
        assert_eq!(
            event_end(b"data: a\r\ndata: b\r\n\r\n", &mut scanned),
            Some(20)
        );
    }

    #[test]
    fn a_dropped_event_ends_at_its_empty_line_across_chunks() {
        let mut skip = Skip::after(b"data: long");
        assert_eq!(skip.event_end(b"er and longer\r"), None);
        assert_eq!(skip.event_end(b"\n"), None);
        assert_eq!(skip.event_end(b"id: 3\n\ndata: next\n\n"), Some(7));
        let mut skip = Skip::after(b"data: x\n");
        assert_eq!(skip.event_end(b"\r\n"), Some(1));
    }

    /// With rules, an SSE body passes event by event: a blocked event and an over-long one are left out
    /// whatever the line ends (CR alone included) and wherever the chunks split.
    #[tokio::test]
    async fn rules_see_every_event_however_it_is_framed() {
        use bytes::Bytes;

        use super::Inspector;
        use crate::rules::{RuleSet, Rules};
        use crate::session::{McpConfig, Sessions};

        let rules = Rules::from_json(
            r#"{"rules": [{"name": "no-progress", "method_regex": "^notifications/prog",
                "direction": "s2c", "action": "block"}]}"#,
        )
        .unwrap();
        let allowed = |n: u32, end: &str| {
            format!(
                r#"data: {{"jsonrpc":"2.0","method":"notifications/message","params":{{"n":{n}}}}}{end}{end}"#
            )
        };
        let blocked = |end: &str| {
            format!(
                r#"data: {{"jsonrpc":"2.0","method":"notifications/progress","params":{{}}}}{end}{end}"#
            )
        };
        let long = format!("data: {}\r\n\r\n", "x".repeat(300));
        let text = [
            allowed(1, "\r"),
            blocked("\r"),
            allowed(2, "\r\n"),
            long,
            blocked("\n"),
            allowed(3, "\r"),
        ]
        .concat();
        let want = [allowed(1, "\r"), allowed(2, "\r\n"), allowed(3, "\r")].concat();
        for step in [1, 2, 3, 7, 64, text.len()] {
            let sessions = Sessions::new(McpConfig::default());
            let (_guard, mcp) = sessions.create("test").unwrap();
            let upstream =
                super::super::http::HttpUpstream::new("http://127.0.0.1:9/mcp", 1 << 20).unwrap();
            let replies = super::super::http::CancelUpstream::for_test(upstream);
            let mut inspector = Inspector::new(mcp, true, 200, None, None)
                .with_rules(RuleSet::new(rules.clone()), replies);
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(step) {
                out.extend_from_slice(&inspector.pass(Bytes::copy_from_slice(chunk)));
            }
            out.extend_from_slice(&inspector.finish());
            assert_eq!(String::from_utf8_lossy(&out), want, "chunks of {step}");
        }
    }
}
