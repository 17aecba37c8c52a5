//! What a URL upstream's responses carry, read as they pass: each server message is correlated, tracked and
//! recorded. With interception rules ([`crate::rules`]) an SSE body is passed on event by event, each
//! event's bytes unchanged, so that one a rule blocks can be left out: a blocked server request is answered
//! upstream with the rule's error, a blocked notification is dropped. Without rules chunks pass as they
//! come.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::http::CancelUpstream;
use crate::http::sse;
use crate::jsonrpc::{Id, Kind, Message};
use crate::metrics;
use crate::rules::Rules;
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
    rules: Option<Arc<Rules>>,
    /// Where a blocked server request's error goes.
    replies: Option<CancelUpstream>,
    /// With rules on an SSE body: the bytes of the event not yet complete, and how far they were scanned.
    held: Option<(BytesMut, usize)>,
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
            rules: None,
            replies: None,
            held: None,
        }
    }

    /// Runs `rules` over the server's messages (an SSE body is then passed on event by event).
    pub(crate) fn with_rules(mut self, rules: Option<Arc<Rules>>, replies: CancelUpstream) -> Self {
        if rules.is_some() && self.sse.is_some() {
            self.held = Some((BytesMut::new(), 0));
        }
        self.rules = rules;
        self.replies = Some(replies);
        self
    }

    /// Takes a chunk of the body; returns what to pass on now.
    pub(crate) fn pass(&mut self, chunk: Bytes) -> Bytes {
        let Some((mut held, mut scanned)) = self.held.take() else {
            self.feed(&chunk);
            return chunk;
        };
        held.extend_from_slice(&chunk);
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&held, &mut scanned) {
            let event = held.split_to(end);
            scanned = 0;
            if self.feed(&event) {
                out.extend_from_slice(&event);
            }
        }
        if held.len() > self.max {
            // Too long to hold: passed on uninspected (the parser skips it as over-long).
            self.feed(&held);
            out.extend_from_slice(&held.split());
            scanned = 0;
        }
        self.held = Some((held, scanned));
        out.freeze()
    }

    /// Feeds bytes to the parser; false if an event in them was blocked by a rule.
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
            None => {}
        }
        keep
    }

    /// The body ended: what is still held, and the JSON body's message.
    pub(crate) fn finish(&mut self) -> Bytes {
        if self.sse.is_none() && !self.json.is_empty() {
            let body = std::mem::take(&mut self.json).freeze();
            self.seen(body);
        }
        match self.held.take() {
            Some((mut held, _)) if !held.is_empty() => {
                let rest = held.split().freeze();
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
        if let Some(rules) = &self.rules
            && let Some(verdict) =
                crate::rules::apply(rules, Some(mcp), Direction::ServerToClient, &message, tape)
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
/// `scanned` is where the search resumes (a line start); it is moved on when nothing is complete yet.
fn event_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let mut line_start = *scanned;
    while let Some(i) = buf[line_start..].iter().position(|&b| b == b'\n') {
        let line = &buf[line_start..line_start + i];
        let next = line_start + i + 1;
        if line.is_empty() || line == b"\r" {
            return Some(next);
        }
        line_start = next;
    }
    *scanned = line_start;
    None
}

#[cfg(test)]
mod tests {
    use super::event_end;

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
}
