//! The proxy's two incremental framings of untrusted bytes — newline-delimited lines (stdio) and
//! Server-Sent Events (an HTTP upstream's streams) — fed the same input whole and in fuzzer-chosen
//! chunks: the result must not depend on where the chunks split, and lines must match a plain model.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tessera_mcp::http::sse::{Event, Parser};
use tessera_mcp::lines::{Line, LineCodec};
use tokio_util::codec::Decoder;

fn lines(input: &[u8], max: usize, step: usize) -> Vec<Line> {
    let mut codec = LineCodec::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in input.chunks(step) {
        buf.extend_from_slice(chunk);
        while let Some(line) = codec.decode(&mut buf).expect("decoding lines never fails") {
            out.push(line);
        }
    }
    out
}

/// What the stdio transport says a stream of lines is, written as plainly as possible.
fn model_lines(input: &[u8], max: usize) -> Vec<Line> {
    let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let partial = pieces.pop().unwrap_or_default();
    let mut out = Vec::new();
    for line in pieces {
        if line.len() > max {
            out.push(Line::TooLong);
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            out.push(Line::Frame(bytes::Bytes::copy_from_slice(line)));
        }
    }
    // A last line still without its newline is reported as soon as it is known to be too long.
    if partial.len() > max {
        out.push(Line::TooLong);
    }
    out
}

fn events(input: &[u8], max_event: usize, step: usize) -> Vec<Event> {
    let mut parser = Parser::new(max_event);
    let mut out = Vec::new();
    for chunk in input.chunks(step) {
        parser.feed(chunk, |e| out.push(e));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [a, b, input @ ..] = data else {
        return;
    };
    let max = 1 + usize::from(*a % 64);
    let step = 1 + usize::from(*b % 17);
    let whole = input.len().max(1);

    let expected = model_lines(input, max);
    assert_eq!(lines(input, max, whole), expected, "lines, whole input");
    assert_eq!(lines(input, max, step), expected, "lines, chunks of {step}");

    let max_event = 4 * max;
    let all = events(input, max_event, whole);
    assert_eq!(
        events(input, max_event, step),
        all,
        "SSE events, chunks of {step}"
    );
    for event in &all {
        assert!(!event.data.is_empty() && event.data.len() <= max_event);
    }
});
