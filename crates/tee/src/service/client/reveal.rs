//! What of the response the proof reveals: everything by default; otherwise the status line, the blank line
//! ending the headers, and what each [`Reveal`] selects (a regex over the raw response, or a JSON path into
//! the body, chunked or not). Everything else is hidden: TEE_K puts random keystream there, so a verifier
//! sees `*`.

use crate::proto::ResponseRange;
use crate::service::common::MAX_HIDDEN_RANGES;

/// One selection of response bytes to reveal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reveal {
    /// The whole response.
    All,
    /// Every match of this regular expression over the raw response bytes.
    Regex(String),
    /// The member (`"key": value`) or element at this path in the JSON body: `$.user.balance`,
    /// `items[0].id`, `a.b.0`.
    JsonPath(String),
}

/// Why a selection could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevealError {
    /// The regular expression does not compile.
    #[error("bad regex {0:?}: {1}")]
    Regex(String, String),
    /// The path is malformed or names nothing in the body.
    #[error("JSON path {0:?}: {1}")]
    JsonPath(String, &'static str),
    /// The response has no end of headers.
    #[error("the response has no header end")]
    NoHeaders,
    /// The selections leave more separate hidden pieces than a proof may have.
    #[error(
        "the selections leave more than {limit} separate hidden pieces; reveal fewer, larger spans"
    )]
    TooManyRanges {
        /// The most a proof may have.
        limit: usize,
    },
}

/// The hidden ranges for `reveal` (none if `reveal` is empty or holds [`Reveal::All`]).
pub fn hidden_ranges(
    response: &[u8],
    reveal: &[Reveal],
) -> Result<Vec<ResponseRange>, RevealError> {
    if reveal.is_empty() || reveal.contains(&Reveal::All) {
        return Ok(Vec::new());
    }
    // The revealed spans `[start, end)`, in any order and overlapping; hidden is their complement.
    let mut shown: Vec<(usize, usize)> = Vec::new();
    let head_end = find(response, b"\r\n\r\n").ok_or(RevealError::NoHeaders)?;
    let status_end = find(response, b"\r\n").map_or(head_end, |e| e + 2);
    shown.push((0, status_end));
    shown.push((head_end, head_end + 4));
    let body_start = head_end + 4;
    for selection in reveal {
        match selection {
            Reveal::All => {}
            Reveal::Regex(pattern) => {
                let re = regex::bytes::Regex::new(pattern)
                    .map_err(|e| RevealError::Regex(pattern.clone(), e.to_string()))?;
                // Matches come in order and apart: touching ones merge as they come, and a regex that
                // leaves more separate pieces than a proof may hide stops here (not after a span for each
                // of millions of matches).
                let mut pieces: Vec<(usize, usize)> = Vec::new();
                for m in re.find_iter(response) {
                    match pieces.last_mut() {
                        Some(last) if m.start() <= last.1 => last.1 = last.1.max(m.end()),
                        _ => pieces.push((m.start(), m.end())),
                    }
                    if pieces.len() > MAX_HIDDEN_RANGES + 1 {
                        return Err(RevealError::TooManyRanges {
                            limit: MAX_HIDDEN_RANGES,
                        });
                    }
                }
                shown.extend(pieces);
            }
            Reveal::JsonPath(path) => {
                let bad = |why| RevealError::JsonPath(path.clone(), why);
                let segments = parse_path(path).ok_or_else(|| bad("malformed path"))?;
                let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
                let raw_body = &response[body_start..];
                let pieces = if head.contains("\r\ntransfer-encoding: chunked") {
                    dechunk(raw_body).ok_or_else(|| bad("malformed chunked body"))?
                } else {
                    vec![(0, raw_body.len())]
                };
                // The body as one slice: borrowed when it is one piece, joined (piece by piece, not byte
                // by byte) when chunked.
                let body: std::borrow::Cow<'_, [u8]> = match pieces.as_slice() {
                    [(0, len)] if *len == raw_body.len() => raw_body.into(),
                    _ => {
                        let mut joined = Vec::with_capacity(raw_body.len());
                        for &(at, len) in &pieces {
                            joined.extend_from_slice(&raw_body[at..at + len]);
                        }
                        joined.into()
                    }
                };
                let (start, end) = json_find(&body, skip_ws(&body, 0), &segments)
                    .ok_or_else(|| bad("not found"))?;
                // Decoded offsets back to raw ones; chunk framing inside the span is revealed too
                // (sizes are not secret, and the member reads whole).
                let raw_at = |offset: usize, is_end: bool| {
                    let mut decoded = 0;
                    for &(at, len) in &pieces {
                        if offset < decoded + len || (is_end && offset == decoded + len) {
                            return body_start + at + offset - decoded;
                        }
                        decoded += len;
                    }
                    response.len()
                };
                shown.push((raw_at(start, false), raw_at(end, true)));
            }
        }
    }
    let hidden = gaps(shown, response.len());
    if hidden.len() > MAX_HIDDEN_RANGES {
        return Err(RevealError::TooManyRanges {
            limit: MAX_HIDDEN_RANGES,
        });
    }
    Ok(hidden)
}

/// The gaps in `[0, len)` that no span `[start, end)` of `shown` covers, in order.
fn gaps(mut shown: Vec<(usize, usize)>, len: usize) -> Vec<ResponseRange> {
    shown.retain(|&(start, end)| start < end); // an empty span (a regex's empty match) reveals nothing
    shown.sort_unstable();
    let mut hidden = Vec::new();
    let mut covered = 0;
    for (start, end) in shown.into_iter().chain([(len, len)]) {
        if start > covered {
            hidden.push(ResponseRange {
                start: covered as u64,
                length: (start - covered) as u64,
            });
        }
        covered = covered.max(end);
    }
    hidden
}

/// The response as a verifier will see it: hidden bytes as `*`.
pub fn view(response: &[u8], hidden: &[ResponseRange]) -> Vec<u8> {
    let mut out = response.to_vec();
    for r in hidden {
        let (start, end) = (r.start as usize, (r.start + r.length) as usize);
        if let Some(part) = out.get_mut(start..end) {
            part.fill(b'*');
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The data pieces `(offset, length)` of a chunked body.
fn dechunk(body: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut pieces = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&body[at..], b"\r\n")?;
        let line = std::str::from_utf8(&body[at..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return Some(pieces);
        }
        if at.checked_add(size)?.checked_add(2)? > body.len() {
            return None;
        }
        pieces.push((at, size));
        at += size + 2;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Option<Vec<Segment>> {
    let path = path.strip_prefix('$').unwrap_or(path);
    let path = path.strip_prefix('.').unwrap_or(path);
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(match key.parse::<usize>() {
                Ok(i) => Segment::Index(i),
                Err(_) => Segment::Key(key.to_owned()),
            });
        } else if rest.is_empty() {
            return None;
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let close = inner.find(']')?;
            out.push(Segment::Index(inner[..close].parse().ok()?));
            rest = &inner[close + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

fn skip_ws(d: &[u8], mut i: usize) -> usize {
    while i < d.len() && matches!(d[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// Index after the string starting at `i` (a `"`).
fn skip_string(d: &[u8], mut i: usize) -> Option<usize> {
    if d.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    // From one quote or backslash to the next (a slice scan, far faster than a byte-by-byte match).
    loop {
        i += d.get(i..)?.iter().position(|&b| b == b'"' || b == b'\\')?;
        if d[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// Index after the value starting at `i`.
fn skip_value(d: &[u8], i: usize) -> Option<usize> {
    match d.get(i)? {
        b'"' => skip_string(d, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < d.len() {
                match d[j] {
                    b'"' => {
                        j = skip_string(d, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let end = d[i..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                .map_or(d.len(), |p| i + p);
            (end > i).then_some(end)
        }
    }
}

/// The span to reveal for `path` in the value at `i`: an object member with its key, or an element.
fn json_find(d: &[u8], i: usize, path: &[Segment]) -> Option<(usize, usize)> {
    let Some((first, rest)) = path.split_first() else {
        return Some((i, skip_value(d, i)?));
    };
    match (d.get(i)?, first) {
        (b'{', Segment::Key(key)) => {
            let mut j = i + 1;
            loop {
                j = skip_ws(d, j);
                let key_start = j;
                let key_end = skip_string(d, j)?;
                j = skip_ws(d, key_end);
                if d.get(j) != Some(&b':') {
                    return None;
                }
                j = skip_ws(d, j + 1);
                if &d[key_start + 1..key_end - 1] == key.as_bytes() {
                    return if rest.is_empty() {
                        Some((key_start, skip_value(d, j)?))
                    } else {
                        json_find(d, j, rest)
                    };
                }
                j = skip_ws(d, skip_value(d, j)?);
                if d.get(j) != Some(&b',') {
                    return None;
                }
                j += 1;
            }
        }
        (b'[', Segment::Index(n)) => {
            let mut j = i + 1;
            let mut index = 0;
            loop {
                j = skip_ws(d, j);
                if d.get(j) == Some(&b']') {
                    return None;
                }
                if index == *n {
                    return json_find(d, j, rest);
                }
                j = skip_ws(d, skip_value(d, j)?);
                if d.get(j) != Some(&b',') {
                    return None;
                }
                j += 1;
                index += 1;
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 44\r\n\r\n{\"user\":\"alice\",\"items\":[1,{\"id\":7}],\"b\":\"9\"}";

    #[test]
    fn json_path_reveals_one_member_and_regex_adds() {
        let hidden = hidden_ranges(RESPONSE, &[Reveal::JsonPath("$.user".into())]).unwrap();
        let shown = String::from_utf8(view(RESPONSE, &hidden)).unwrap();
        assert!(shown.starts_with("HTTP/1.1 200 OK\r\n****"), "{shown}");
        assert!(shown.contains("\r\n\r\n*\"user\":\"alice\"****"), "{shown}");
        let hidden = hidden_ranges(RESPONSE, &[Reveal::JsonPath("items[1].id".into())]).unwrap();
        let shown = String::from_utf8(view(RESPONSE, &hidden)).unwrap();
        assert!(shown.contains("*\"id\":7*"), "{shown}");
        assert!(!shown.contains("alice"), "{shown}");
        let hidden = hidden_ranges(RESPONSE, &[Reveal::Regex("alice".into())]).unwrap();
        assert!(
            String::from_utf8(view(RESPONSE, &hidden))
                .unwrap()
                .contains("*alice*")
        );
        assert!(hidden_ranges(RESPONSE, &[]).unwrap().is_empty());
        assert!(hidden_ranges(RESPONSE, &[Reveal::JsonPath("nope".into())]).is_err());
        assert!(hidden_ranges(RESPONSE, &[Reveal::Regex("(".into())]).is_err());
    }

    #[test]
    fn json_path_in_a_chunked_body_maps_to_raw_bytes() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"a\":\"xy\r\n4\r\nz\"}\n\r\n0\r\n\r\n";
        let hidden = hidden_ranges(response, &[Reveal::JsonPath("a".into())]).unwrap();
        let shown = String::from_utf8(view(response, &hidden)).unwrap();
        assert!(
            shown.contains("\r\n\r\n****\"a\":\"xy\r\n4\r\nz\"***"),
            "{shown}"
        );
    }

    #[test]
    fn strings_with_escapes_are_skipped_whole() {
        let d = br#""a\"b\\" tail"#;
        assert_eq!(
            skip_string(d, 0),
            Some(8),
            "the quote after the escaped backslash"
        );
        assert_eq!(skip_string(br#""\"#, 0), None, "an escape at the end");
        assert_eq!(skip_string(br#""abc"#, 0), None, "no closing quote");
        let response = b"HTTP/1.1 200 OK\r\n\r\n{\"k\\\"\":\"x\\\"y\",\"show\":\"v\"}";
        let hidden = hidden_ranges(response, &[Reveal::JsonPath("show".into())]).unwrap();
        let shown = String::from_utf8(view(response, &hidden)).unwrap();
        assert!(shown.ends_with("*\"show\":\"v\"*"), "{shown}");
    }

    #[test]
    fn a_regex_leaving_too_many_pieces_is_refused_early() {
        let mut response = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        response.extend(b"a.".repeat(20_000));
        assert_eq!(
            hidden_ranges(&response, &[Reveal::Regex("a".into())]),
            Err(RevealError::TooManyRanges {
                limit: MAX_HIDDEN_RANGES
            })
        );
        // Touching matches merge: `[a.]` matches every byte of the body, one revealed span, nothing hidden.
        let hidden = hidden_ranges(&response, &[Reveal::Regex("[a.]".into())]).unwrap();
        assert_eq!(hidden.len(), 0, "{hidden:?}");
    }

    proptest::proptest! {
        #[test]
        fn gaps_are_exactly_the_bytes_no_span_covers(
            len in 0usize..300,
            spans in proptest::collection::vec((0usize..300, 0usize..40), 0..12),
        ) {
            let spans: Vec<(usize, usize)> = spans
                .into_iter()
                .map(|(start, n)| (start.min(len), (start + n).min(len)))
                .collect();
            let mut covered = vec![false; len];
            for &(start, end) in &spans {
                covered[start..end].fill(true);
            }
            let mut from_gaps = vec![true; len];
            let hidden = gaps(spans, len);
            for r in &hidden {
                proptest::prop_assert!(r.length > 0);
                from_gaps[r.start as usize..(r.start + r.length) as usize].fill(false);
            }
            proptest::prop_assert_eq!(from_gaps, covered);
            // In order, and never two touching (each gap is maximal).
            for pair in hidden.windows(2) {
                proptest::prop_assert!(pair[0].start + pair[0].length < pair[1].start);
            }
        }
    }
}
