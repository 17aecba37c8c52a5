//! Newline-delimited framing, as the stdio transport defines it: one UTF-8 JSON-RPC message per line, no
//! embedded newlines. A line longer than the limit is discarded up to its newline and reported as
//! [`Line::TooLong`], so the reader can answer it and carry on; it never buffers more than the limit.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default longest line: 16 MiB (tool results may carry base64 images).
pub const DEFAULT_MAX_LINE: usize = 16 * 1024 * 1024;

/// One decoded line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line's bytes, without its newline (and without a trailing CR).
    Frame(Bytes),
    /// A line longer than the limit was skipped.
    TooLong,
}

/// The codec: decodes [`Line`]s and encodes byte strings as lines.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max: usize,
    /// Where to resume the newline search in the buffer.
    scanned: usize,
    /// Inside an over-long line: drop bytes up to the next newline.
    discarding: bool,
}

impl LineCodec {
    /// A codec that accepts lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        LineCodec {
            max: max.max(1),
            scanned: 0,
            discarding: false,
        }
    }
}

impl Default for LineCodec {
    fn default() -> Self {
        LineCodec::new(DEFAULT_MAX_LINE)
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, io::Error> {
        loop {
            let newline = buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| i + self.scanned);
            match newline {
                Some(end) => {
                    self.scanned = 0;
                    let mut line = buf.split_to(end + 1);
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    if end > self.max {
                        return Ok(Some(Line::TooLong));
                    }
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(end - 1);
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Ok(Some(Line::Frame(line.freeze())));
                }
                None if self.discarding => {
                    buf.clear();
                    self.scanned = 0;
                    return Ok(None);
                }
                None if buf.len() > self.max => {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Ok(Some(Line::TooLong));
                }
                None => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, io::Error> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        // A last line without its newline still counts.
        if buf.is_empty() || self.discarding {
            buf.clear();
            return Ok(None);
        }
        buf.put_u8(b'\n');
        self.decode(buf)
    }
}

impl Encoder<Bytes> for LineCodec {
    type Error = io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), io::Error> {
        dst.reserve(item.len() + 1);
        dst.put_slice(&item);
        dst.put_u8(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut LineCodec, input: &[&[u8]]) -> Vec<Line> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input {
            buf.extend_from_slice(chunk);
            while let Some(line) = codec.decode(&mut buf).unwrap() {
                out.push(line);
            }
        }
        while let Some(line) = codec.decode_eof(&mut buf).unwrap() {
            out.push(line);
        }
        out
    }

    fn frame(s: &str) -> Line {
        Line::Frame(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn splits_lines_across_chunks() {
        let mut c = LineCodec::new(100);
        let got = decode_all(
            &mut c,
            &[b"{\"a\"", b":1}\r\n\n  \n{}", b"\n{\"last\":true}"],
        );
        assert_eq!(
            got,
            vec![frame("{\"a\":1}"), frame("{}"), frame("{\"last\":true}")]
        );
    }

    #[test]
    fn skips_an_over_long_line_and_carries_on() {
        let mut c = LineCodec::new(8);
        let got = decode_all(
            &mut c,
            &[
                b"{\"x\":\"0123456789",
                b"0123456789\"}\n{}\n",
                b"0123456789\n[]\n",
            ],
        );
        assert_eq!(
            got,
            vec![Line::TooLong, frame("{}"), Line::TooLong, frame("[]")]
        );
    }

    proptest! {
        #[test]
        fn chunking_does_not_change_the_lines(
            lines in proptest::collection::vec("[a-z{}:\"]{1,20}", 0..10),
            cut in 1usize..7,
        ) {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            let chunks: Vec<&[u8]> = text.as_bytes().chunks(cut).collect();
            let got = decode_all(&mut LineCodec::new(12), &chunks);
            let want: Vec<Line> = lines.iter().map(|l| if l.len() > 12 { Line::TooLong } else { frame(l) }).collect();
            prop_assert_eq!(got, want);
        }
    }
}
