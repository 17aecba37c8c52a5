//! Request redaction: masking and commitments round-trip; TEE_T refuses wrong streams and hidden CR/LF;
//! TEE_K refuses requests that break the visible rules.

use tessera_tee::proto::{RangeType, RequestRange};
use tessera_tee::redaction::{
    RedactionError, check_streams, redact_request, validate_redacted_request,
};

const REQUEST: &[u8] = b"GET /a?x=1 HTTP/1.1\r\nHost: example.com:8443\r\nCookie: s3cret\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n";

fn range_of(hay: &[u8], needle: &[u8], kind: RangeType) -> RequestRange {
    let start = hay
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle") as u32;
    RequestRange {
        start,
        length: needle.len() as u32,
        r#type: kind as i32,
    }
}

fn masked_slices(redacted: &[u8], ranges: &[RequestRange]) -> Vec<Vec<u8>> {
    ranges
        .iter()
        .map(|r| redacted[r.start as usize..(r.start + r.length) as usize].to_vec())
        .collect()
}

#[test]
fn honest_redaction_passes_both_tees_and_hides_the_secret() {
    let ranges = [range_of(REQUEST, b"s3cret", RangeType::Sensitive)];
    let (redacted, streams) = redact_request(REQUEST, &ranges).unwrap();
    assert!(!redacted.redacted.windows(6).any(|w| w == b"s3cret"));
    validate_redacted_request(&redacted, "example.com", 8443).unwrap();
    let masked = masked_slices(&redacted.redacted, &ranges);
    check_streams(&ranges, &redacted.commitments, &streams, &masked).unwrap();
    // Unmasking gives back the request.
    let mut real = redacted.redacted.clone();
    let start = ranges[0].start as usize;
    real[start..start + 6]
        .iter_mut()
        .zip(&streams.streams[0])
        .for_each(|(b, s)| *b ^= s);
    assert_eq!(real, REQUEST);
}

#[test]
fn tee_t_refuses_wrong_streams_and_hidden_crlf() {
    let ranges = [range_of(REQUEST, b"s3cret", RangeType::Sensitive)];
    let (redacted, streams) = redact_request(REQUEST, &ranges).unwrap();
    let masked = masked_slices(&redacted.redacted, &ranges);
    let mut bad = streams.clone();
    bad.streams[0][0] ^= 1;
    assert_eq!(
        check_streams(&ranges, &redacted.commitments, &bad, &masked),
        Err(RedactionError::Commitment(0))
    );
    let mut short = streams.clone();
    short.commitment_keys.clear();
    assert!(matches!(
        check_streams(&ranges, &redacted.commitments, &short, &masked),
        Err(RedactionError::Streams(_))
    ));

    // A "cookie" that smuggles a second Host header.
    let evil: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\nCookie: a\r\nHost: evil\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n";
    let ranges = [range_of(evil, b"a\r\nHost: evil", RangeType::Sensitive)];
    let (redacted, streams) = redact_request(evil, &ranges).unwrap();
    let masked = masked_slices(&redacted.redacted, &ranges);
    assert_eq!(
        check_streams(&ranges, &redacted.commitments, &streams, &masked),
        Err(RedactionError::ControlByte(0))
    );
}

#[test]
fn tee_k_enforces_the_visible_rules() {
    let ok = |req: &[u8], hidden: &[u8]| {
        let ranges: Vec<_> = if hidden.is_empty() {
            vec![]
        } else {
            vec![range_of(req, hidden, RangeType::Sensitive)]
        };
        let (redacted, _) = redact_request(req, &ranges).unwrap();
        validate_redacted_request(&redacted, "example.com", 8443)
    };
    assert!(ok(REQUEST, b"s3cret").is_ok());
    assert!(matches!(
        ok(REQUEST, b"example.com:8443"),
        Err(RedactionError::Request(_))
    ));
    assert!(matches!(
        ok(REQUEST, b"close"),
        Err(RedactionError::Request(_))
    ));
    assert!(matches!(
        ok(REQUEST, b"GET"),
        Err(RedactionError::Request(_))
    ));
    assert!(matches!(
        ok(REQUEST, b"Cookie"),
        Err(RedactionError::Request(_))
    ));
    let wrong_host = b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n";
    assert!(matches!(
        ok(wrong_host, b""),
        Err(RedactionError::Request(_))
    )); // port 8443 must be in Host
    let gzip = b"GET / HTTP/1.1\r\nHost: example.com:8443\r\nConnection: close\r\nAccept-Encoding: gzip\r\n\r\n";
    assert!(matches!(ok(gzip, b""), Err(RedactionError::Request(_))));
    let keep_alive = b"GET / HTTP/1.1\r\nHost: example.com:8443\r\nConnection: keep-alive\r\nAccept-Encoding: identity\r\n\r\n";
    assert!(matches!(
        ok(keep_alive, b""),
        Err(RedactionError::Request(_))
    ));
    let put = b"PUT / HTTP/1.1\r\nHost: example.com:8443\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n";
    assert!(matches!(ok(put, b""), Err(RedactionError::Request(_))));
    let two_hosts = b"GET / HTTP/1.1\r\nHost: example.com:8443\r\nHost: example.com:8443\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n";
    assert!(matches!(
        ok(two_hosts, b""),
        Err(RedactionError::Request(_))
    ));
    // Only SP and HTAB around a value are optional whitespace; Unicode whitespace (U+00A0 NBSP, U+3000,
    // U+0085) is part of the Host a server sees, and a Host must be ASCII.
    let host = |value: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost:{value}\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n"
        )
    };
    assert!(ok(host(" \texample.com:8443\t ").as_bytes(), b"").is_ok());
    for spoofed in [
        " example.com:8443\u{a0}",
        "\u{a0}example.com:8443",
        " example.com:8443\u{3000}",
        " example.com:8443\u{85}",
    ] {
        assert_eq!(
            ok(host(spoofed).as_bytes(), b""),
            Err(RedactionError::Request(
                "Host differs from the server name or is hidden"
            )),
            "{spoofed:?}"
        );
    }
}

#[test]
fn bad_ranges_are_refused() {
    let r = |start, length, t: RangeType| RequestRange {
        start,
        length,
        r#type: t as i32,
    };
    for ranges in [
        vec![r(0, 0, RangeType::Sensitive)],
        vec![r(5, 10_000, RangeType::Sensitive)],
        vec![
            r(10, 5, RangeType::Sensitive),
            r(12, 5, RangeType::SensitiveProof),
        ],
        vec![
            r(20, 2, RangeType::Sensitive),
            r(10, 2, RangeType::Sensitive),
        ],
        vec![r(10, 2, RangeType::Unspecified)],
        vec![r(u32::MAX, 2, RangeType::Sensitive)],
    ] {
        assert!(
            matches!(
                redact_request(REQUEST, &ranges),
                Err(RedactionError::Range(_))
            ),
            "{ranges:?}"
        );
    }
}

#[test]
fn query_values_may_be_hidden_and_are_checked_by_the_stricter_rule() {
    use tessera_tee::redaction::{check_streams_in, target_ranges};
    let request = b"GET /a?token=abc123&v=1 HTTP/1.1\r\nHost: example.com:8443\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n";
    let range = range_of(request, b"abc123", RangeType::Sensitive);
    let (redacted, streams) = redact_request(request, &[range]).unwrap();
    validate_redacted_request(&redacted, "example.com", 8443).unwrap();
    assert_eq!(target_ranges(&redacted), [true]);
    let masked = vec![redacted.redacted[range.start as usize..][..6].to_vec()];
    check_streams_in(&[range], &redacted.commitments, &streams, &masked, &[true]).unwrap();
    // The path, or a range that is not exactly a value, stays refused.
    for hidden in [&b"/a"[..], b"token", b"abc", b"bc123"] {
        let range = range_of(request, hidden, RangeType::Sensitive);
        let (redacted, _) = redact_request(request, &[range]).unwrap();
        assert!(
            validate_redacted_request(&redacted, "example.com", 8443).is_err(),
            "{}",
            String::from_utf8_lossy(hidden)
        );
    }
    // A hidden value holding `&`, `#` or a space is refused by TEE_T's rule for query values, not by the
    // header rule.
    for evil in [&b"a&admin=1"[..], b"a#b", b"a b"] {
        let mut request = b"GET /a?token=".to_vec();
        request.extend_from_slice(evil);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: example.com:8443\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n");
        let range = range_of(&request, evil, RangeType::Sensitive);
        let (redacted, streams) = redact_request(&request, &[range]).unwrap();
        let masked = vec![redacted.redacted[range.start as usize..][..evil.len()].to_vec()];
        assert!(
            check_streams_in(&[range], &redacted.commitments, &streams, &masked, &[false]).is_ok()
        );
        assert!(matches!(
            check_streams_in(&[range], &redacted.commitments, &streams, &masked, &[true]),
            Err(RedactionError::ControlByte(0))
        ));
    }
}

#[test]
fn masked_bytes_that_look_like_line_ends_are_not_line_ends() {
    // The masked bytes are random, so now and then they hold CR LF (even CR LF CR LF): TEE_K must split
    // lines and find the header end on visible bytes only.
    let request = b"GET /a HTTP/1.1\r\nHost: example.com:8443\r\nCookie: 0123456789\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n";
    let range = range_of(request, b"0123456789", RangeType::Sensitive);
    let (mut redacted, _) = redact_request(request, &[range]).unwrap();
    let start = range.start as usize;
    redacted.redacted[start..start + 10].copy_from_slice(b"a\r\n\r\nb:\r\nc");
    validate_redacted_request(&redacted, "example.com", 8443).unwrap();
    assert_eq!(tessera_tee::redaction::target_ranges(&redacted), [false]);
}
