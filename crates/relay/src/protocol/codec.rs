//! The codec: one JSON object (UTF-8) per channel message, tagged by its `type` field.
//!
//! A channel message is already framed, encrypted and authenticated by `tessera-channel`, so the codec
//! needs no length prefix. Unknown fields and unknown types are refused, so a request means exactly one
//! thing. Decoding never panics on any input; sizes are bounded by the channel's message limit and by
//! the relay's field limits.

use super::{Reply, Request};

/// A frame that is not a valid message.
#[derive(Debug, thiserror::Error)]
#[error("malformed relay message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

/// Encodes a request.
pub fn encode_request(request: &Request) -> Vec<u8> {
    // Serializing these plain structs to JSON cannot fail (no maps with non-string keys, no I/O).
    serde_json::to_vec(request).unwrap_or_default()
}

/// Decodes a request.
pub fn decode_request(bytes: &[u8]) -> Result<Request, DecodeError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Encodes a reply.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    serde_json::to_vec(reply).unwrap_or_default()
}

/// Decodes a reply.
pub fn decode_reply(bytes: &[u8]) -> Result<Reply, DecodeError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Best-effort request number of a frame that failed to decode as a request, for the error reply.
pub fn salvage_req(bytes: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    value.get("req")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Envelope, ErrorCode, MessageRef, PreKey};

    /// The fuzz target's seeds for frames (`fuzz/seeds/untrusted_input`: a selector byte, then the frame)
    /// are frames of today's protocol, so the fuzzer starts from inputs that decode.
    #[test]
    fn the_fuzz_seeds_are_current_frames() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/untrusted_input");
        for (name, request) in [("ack", true), ("send", true), ("deliver", false)] {
            let seed = std::fs::read(dir.join(name)).expect("seed");
            let (_, frame) = seed.split_first().expect("selector");
            if request {
                decode_request(frame).unwrap_or_else(|e| panic!("{name}: {e}"));
            } else {
                decode_reply(frame).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::RegisterDevice {
                req: 1,
                username: "alice".into(),
                identity_key: "ik".into(),
                signing_key: "sk".into(),
                invite: Some("t".into()),
            },
            Request::PublishPrekeys {
                req: 2,
                one_time_keys: vec![PreKey {
                    key_id: "1".into(),
                    key: "k".into(),
                }],
                fallback_key: Some(PreKey {
                    key_id: "f".into(),
                    key: "fk".into(),
                }),
            },
            Request::FetchBundle {
                req: 3,
                username: "bob".into(),
            },
            Request::Send {
                req: 4,
                message_id: "m1".into(),
                to: "bob".into(),
                envelopes: vec![Envelope {
                    device: "d".into(),
                    ciphertext: "c".into(),
                }],
            },
            Request::Ack {
                req: 5,
                messages: vec![MessageRef {
                    from_device: "d".into(),
                    message_id: "m1".into(),
                    seq: 1,
                }],
            },
        ];
        for request in requests {
            let bytes = encode_request(&request);
            assert_eq!(decode_request(&bytes).expect("decode"), request);
        }
    }

    #[test]
    fn wire_shape_is_documented_shape() {
        let bytes = encode_request(&Request::FetchBundle {
            req: 7,
            username: "bob".into(),
        });
        assert_eq!(
            std::str::from_utf8(&bytes).expect("utf8"),
            r#"{"type":"fetch_bundle","req":7,"username":"bob"}"#
        );
        let reply = Reply::Error {
            req: None,
            code: ErrorCode::Malformed,
            message: "x".into(),
        };
        assert_eq!(
            std::str::from_utf8(&encode_reply(&reply)).expect("utf8"),
            r#"{"type":"error","req":null,"code":"malformed","message":"x"}"#
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"{}",
            b"[]",
            b"{\"type\":\"nope\",\"req\":1}",
            b"{\"type\":\"fetch_bundle\",\"req\":1,\"username\":\"b\",\"extra\":1}",
            b"{\"type\":\"fetch_bundle\",\"req\":-1,\"username\":\"b\"}",
        ] {
            assert!(decode_request(bad).is_err(), "{bad:?}");
        }
        assert_eq!(salvage_req(b"{\"type\":\"nope\",\"req\":9}"), Some(9));
        assert_eq!(salvage_req(b"\xff"), None);
    }

    #[test]
    fn tokens_are_on_the_wire_but_not_in_debug_output() {
        let request = Request::RegisterDevice {
            req: 1,
            username: "alice".into(),
            identity_key: "ik".into(),
            signing_key: "sk".into(),
            invite: Some("secret-token-123".into()),
        };
        assert!(!format!("{request:?}").contains("secret-token-123"));
        let wire = String::from_utf8(encode_request(&request)).expect("utf-8");
        assert!(wire.contains(r#""invite":"secret-token-123""#), "{wire}");
        let reply = Reply::Link {
            req: 2,
            token: "secret-token-456".into(),
            expires_at: 0,
        };
        assert!(!format!("{reply:?}").contains("secret-token-456"));
        let decoded = decode_reply(&encode_reply(&reply)).expect("decode");
        assert_eq!(decoded, reply);
    }
}
