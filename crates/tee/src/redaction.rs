//! Request redaction (reference step 6): the client masks hidden ranges with fresh streams and commits to
//! them; TEE_K validates the redacted request; TEE_T checks the commitments and that no hidden range holds a
//! CR, LF or other control byte (reference gap 11: nothing can smuggle a header or a second request into a
//! "cookie").
//!
//! Hidden bytes: `redacted = real XOR stream` inside each range; `commitment = HMAC-SHA256(key, stream)`.

use crate::proto::{RangeType, RedactedRequest, RedactionStreams, RequestRange};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Why a redacted request or its streams were refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedactionError {
    /// A range is empty, out of bounds, unsorted, overlapping or of an unknown type.
    #[error("invalid range: {0}")]
    Range(&'static str),
    /// Counts of ranges, streams, keys and commitments disagree, or a stream has the wrong length.
    #[error("redaction streams do not match the ranges: {0}")]
    Streams(&'static str),
    /// A stream does not match its commitment.
    #[error("commitment of range {0} does not match its stream")]
    Commitment(usize),
    /// A hidden range holds a byte that is not allowed in a header value (CR, LF, other control bytes).
    #[error("hidden range {0} holds a control byte (CR, LF, ...)")]
    ControlByte(usize),
    /// The visible request breaks a rule TEE_K enforces.
    #[error("request refused: {0}")]
    Request(&'static str),
}

type HmacSha256 = Hmac<Sha256>;

fn commit(key: &[u8], stream: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; an empty tag would never verify anyway.
    HmacSha256::new_from_slice(key)
        .map(|mut mac| {
            mac.update(stream);
            mac.finalize().into_bytes().to_vec()
        })
        .unwrap_or_default()
}

/// Checks ranges against a request length: non-empty, in bounds, sorted, disjoint, of a known type.
pub fn check_ranges(ranges: &[RequestRange], len: usize) -> Result<(), RedactionError> {
    let mut end_of_previous = 0usize;
    for range in ranges {
        let start = range.start as usize;
        let end = start
            .checked_add(range.length as usize)
            .filter(|&e| e <= len && range.length > 0)
            .ok_or(RedactionError::Range("empty or out of bounds"))?;
        if start < end_of_previous {
            return Err(RedactionError::Range("unsorted or overlapping"));
        }
        if !matches!(
            RangeType::try_from(range.r#type),
            Ok(RangeType::Sensitive | RangeType::SensitiveProof)
        ) {
            return Err(RedactionError::Range("unknown type"));
        }
        end_of_previous = end;
    }
    Ok(())
}

/// Client: masks `request` in `ranges` with fresh random streams and commits to them. The first message goes
/// to TEE_K, the second to TEE_T.
pub fn redact_request(
    request: &[u8],
    ranges: &[RequestRange],
) -> Result<(RedactedRequest, RedactionStreams), RedactionError> {
    check_ranges(ranges, request.len())?;
    let mut redacted = request.to_vec();
    let mut streams = RedactionStreams::default();
    let mut commitments = Vec::with_capacity(ranges.len());
    for range in ranges {
        let mut stream = vec![0u8; range.length as usize];
        rand::fill(&mut stream[..]);
        let mut key = vec![0u8; 32];
        rand::fill(&mut key[..]);
        let start = range.start as usize;
        redacted[start..start + stream.len()]
            .iter_mut()
            .zip(&stream)
            .for_each(|(b, s)| *b ^= s);
        commitments.push(commit(&key, &stream));
        streams.streams.push(stream);
        streams.commitment_keys.push(key);
    }
    let request = RedactedRequest {
        redacted,
        commitments,
        ranges: ranges.to_vec(),
    };
    Ok((request, streams))
}

/// TEE_T: checks every stream against its commitment and the hidden plaintext against the rule the client
/// cannot choose: no byte below 0x20 except TAB, no DEL. `masked` holds, range by range, the redacted bytes
/// of each hidden range as TEE_K saw them (so `masked XOR stream` is the real plaintext).
pub fn check_streams(
    ranges: &[RequestRange],
    commitments: &[Vec<u8>],
    streams: &RedactionStreams,
    masked: &[Vec<u8>],
) -> Result<(), RedactionError> {
    check_streams_in(ranges, commitments, streams, masked, &[])
}

/// [`check_streams`], where `in_target[i]` (from TEE_K's [`target_ranges`], never from the client) marks a
/// range inside the request target — a query parameter value — whose plaintext must also be printable ASCII
/// without space, `&` or `#`, so that it can neither end the request line nor add a parameter.
pub fn check_streams_in(
    ranges: &[RequestRange],
    commitments: &[Vec<u8>],
    streams: &RedactionStreams,
    masked: &[Vec<u8>],
    in_target: &[bool],
) -> Result<(), RedactionError> {
    let n = ranges.len();
    if !in_target.is_empty() && in_target.len() != n {
        return Err(RedactionError::Streams("one target flag per range"));
    }
    if commitments.len() != n
        || streams.streams.len() != n
        || streams.commitment_keys.len() != n
        || masked.len() != n
    {
        return Err(RedactionError::Streams("counts differ"));
    }
    for (i, range) in ranges.iter().enumerate() {
        let stream = &streams.streams[i];
        if stream.len() != range.length as usize || masked[i].len() != stream.len() {
            return Err(RedactionError::Streams(
                "a stream's length differs from its range",
            ));
        }
        let mut mac = HmacSha256::new_from_slice(&streams.commitment_keys[i])
            .map_err(|_| RedactionError::Streams("bad commitment key"))?;
        mac.update(stream);
        mac.verify_slice(&commitments[i])
            .map_err(|_| RedactionError::Commitment(i))?;
        let target = in_target.get(i).copied().unwrap_or(false);
        let clean = masked[i].iter().zip(stream).map(|(m, s)| m ^ s).all(|b| {
            if target {
                b.is_ascii_graphic() && b != b'&' && b != b'#'
            } else {
                b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
            }
        });
        if !clean {
            return Err(RedactionError::ControlByte(i));
        }
    }
    Ok(())
}

/// TEE_K: which ranges lie in the request line (query parameter values, once
/// [`validate_redacted_request`] accepted the request). TEE_K sends these flags to TEE_T, which checks those
/// ranges with the stricter rule of [`check_streams_in`].
pub fn target_ranges(request: &RedactedRequest) -> Vec<bool> {
    let hidden = |p: usize| {
        request
            .ranges
            .iter()
            .any(|r| (r.start as usize..r.start as usize + r.length as usize).contains(&p))
    };
    let line_end = (0..request.redacted.len().saturating_sub(1))
        .find(|&p| &request.redacted[p..p + 2] == b"\r\n" && !hidden(p) && !hidden(p + 1))
        .unwrap_or(request.redacted.len());
    request
        .ranges
        .iter()
        .map(|r| (r.start as usize) < line_end)
        .collect()
}

/// TEE_K: the visible request must be one HTTP/1.1 GET or POST with an unredacted `Host` equal to
/// `host` (or `host:port` for ports other than 443), `Connection: close` and `Accept-Encoding: identity`,
/// and the hidden ranges must lie inside header values or query parameter values of the request target
/// (never in the method, path or version, a header name, the `Host` line or the final CRLF CRLF).
pub fn validate_redacted_request(
    request: &RedactedRequest,
    host: &str,
    port: u16,
) -> Result<(), RedactionError> {
    let bytes = &request.redacted;
    check_ranges(&request.ranges, bytes.len())?;
    if request.commitments.len() != request.ranges.len() {
        return Err(RedactionError::Streams("one commitment per range"));
    }
    let hidden = |start: usize, end: usize| {
        request.ranges.iter().any(|r| {
            let (rs, re) = (r.start as usize, r.start as usize + r.length as usize);
            rs < end && start < re
        })
    };
    // Masked bytes are random: a CR LF inside a hidden range is no line end (the real bytes hold none,
    // which TEE_T checks), so only visible separators count.
    let mut masked = vec![false; bytes.len()];
    for r in &request.ranges {
        masked[r.start as usize..r.start as usize + r.length as usize].fill(true);
    }
    let visible_crlf = |p: usize| &bytes[p..p + 2] == b"\r\n" && !masked[p] && !masked[p + 1];
    let head_end = (0..bytes.len().saturating_sub(3))
        .find(|&p| visible_crlf(p) && visible_crlf(p + 2))
        .ok_or(RedactionError::Request("no end of headers"))?;
    if request
        .ranges
        .iter()
        .any(|r| r.start as usize + r.length as usize > head_end)
    {
        return Err(RedactionError::Request(
            "a hidden range reaches past the headers",
        ));
    }
    let mut lines = Vec::new();
    let mut at = 0;
    while at < head_end {
        let end = (at..head_end.saturating_sub(1))
            .find(|&p| visible_crlf(p))
            .unwrap_or(head_end);
        lines.push((at, end));
        at = end + 2;
    }
    let (first_start, first_end) = *lines
        .first()
        .ok_or(RedactionError::Request("empty request"))?;
    let line = &bytes[first_start..first_end];
    if !(line.starts_with(b"GET ") || line.starts_with(b"POST ")) || !line.ends_with(b" HTTP/1.1") {
        return Err(RedactionError::Request("only GET or POST over HTTP/1.1"));
    }
    // In the request line only query parameter values may be hidden: after a visible `?`, right after a
    // visible `=`, ending at a visible `&` or at the space before `HTTP/1.1`.
    let version_at = first_end - b" HTTP/1.1".len();
    let first_hidden = request
        .ranges
        .iter()
        .map(|r| r.start as usize)
        .find(|&s| s < first_end);
    if let Some(first_hidden) = first_hidden {
        let query = bytes[first_start..first_hidden]
            .iter()
            .position(|&b| b == b'?')
            .ok_or(RedactionError::Request(
                "the request line is hidden outside the query",
            ))?;
        for r in request
            .ranges
            .iter()
            .filter(|r| (r.start as usize) < first_end)
        {
            let (start, end) = (r.start as usize, r.start as usize + r.length as usize);
            let value = start > first_start + query
                && bytes[start - 1] == b'='
                && !hidden(start - 1, start)
                && end <= version_at
                && matches!(bytes[end], b'&' | b' ')
                && !hidden(end, end + 1);
            if !value {
                return Err(RedactionError::Request(
                    "a hidden range in the request line is not a query parameter value",
                ));
            }
        }
    }
    let expected_host = if port == 443 {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    };
    let (mut host_ok, mut close_ok, mut identity_ok) = (false, false, false);
    for &(start, end) in &lines[1..] {
        let colon = bytes[start..end]
            .iter()
            .position(|&b| b == b':')
            .map(|p| start + p)
            .ok_or(RedactionError::Request("a header line without a colon"))?;
        if hidden(start, colon + 1) {
            return Err(RedactionError::Request("a header name is hidden"));
        }
        let name = String::from_utf8_lossy(&bytes[start..colon]).to_ascii_lowercase();
        let visible = !hidden(colon + 1, end);
        let value = field_value(&bytes[colon + 1..end]);
        match name.as_str() {
            "host" if host_ok => return Err(RedactionError::Request("two Host headers")),
            "host"
                if visible
                    && value.is_ascii()
                    && value.eq_ignore_ascii_case(expected_host.as_bytes()) =>
            {
                host_ok = true
            }
            "host" => {
                return Err(RedactionError::Request(
                    "Host differs from the server name or is hidden",
                ));
            }
            "connection" => close_ok = visible && value.eq_ignore_ascii_case(b"close"),
            "accept-encoding" => identity_ok = visible && value.eq_ignore_ascii_case(b"identity"),
            _ => {}
        }
    }
    match (host_ok, close_ok, identity_ok) {
        (false, _, _) => Err(RedactionError::Request("no Host header")),
        (_, false, _) => Err(RedactionError::Request("no visible `Connection: close`")),
        (_, _, false) => Err(RedactionError::Request(
            "no visible `Accept-Encoding: identity`",
        )),
        _ => Ok(()),
    }
}

/// A header field's value without the optional whitespace around it: only SP and HTAB (RFC 9110 `OWS`).
/// `str::trim` would also strip Unicode whitespace such as U+00A0, which a server takes as part of the
/// value: `Host: bank.com\u{a0}` would pass as `bank.com` here and reach another virtual host there.
fn field_value(value: &[u8]) -> &[u8] {
    let ows = |b: &u8| matches!(b, b' ' | b'\t');
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |p| p + 1);
    &value[start..end]
}
