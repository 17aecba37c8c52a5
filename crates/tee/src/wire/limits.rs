//! A pre-pass over a protobuf message, run before prost decodes it, that bounds every repeated field.
//!
//! prost puts no limit on a repeated field, and an empty element is 2 bytes on the wire but a whole struct in
//! memory (an `EncryptedResponse` is 112 bytes): an 8 MiB message of empty records decodes into ~0.7 GB, a
//! 156 MiB bundle of empty attestations into ~10 GB. The pre-pass walks the fields with
//! `prost::encoding` (allocating nothing), counts the elements of each repeated field — summed over every
//! occurrence of the message holding it, since prost merges a message field that occurs twice — and refuses
//! the message once a count passes the field's cap. Only then is the message decoded.
//!
//! Each cap is far above what a real message holds: records per batch at most what fits in
//! [`MAX_MESSAGE_LEN`] at the smallest real record encoding, request ranges at most one per byte of the
//! one-record request, hidden response ranges at most [`MAX_HIDDEN_RANGES`] (TEE_K's own limit).

use super::MAX_MESSAGE_LEN;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use thiserror::Error;

/// Most hidden response ranges a proof may have (TEE_K refuses more; the client says so before asking).
pub const MAX_HIDDEN_RANGES: usize = 4096;

/// Smallest encoding of a real response record inside a batch: its 16-byte tag (18 bytes with key and
/// length), its 5-byte header (7) and the element's own key and length (2); the ciphertext may be empty
/// (TLS 1.2) and `seq` 0 is not encoded. The per-record messages of the other batch types (lengths, tag
/// secrets, verdicts, keystreams) have one element per record of the batch they answer.
pub const MIN_RECORD_ENCODING: usize = 27;

/// Most records in one batch message: [`MAX_MESSAGE_LEN`] of the smallest real records. Decoded, that is at
/// most ~35 MB (about 4× the message), instead of ~0.7 GB for empty elements.
pub const MAX_BATCH_RECORDS: usize = MAX_MESSAGE_LEN / MIN_RECORD_ENCODING;

/// Most hidden request ranges: one per byte of the request, which fits in one TLS record.
pub const MAX_REQUEST_RANGES: usize = crate::record::MAX_PLAINTEXT;

/// Most ALPN protocols in `request_connection` (TEE_K accepts 8).
pub const MAX_ALPN: usize = 16;

/// Most attestation documents in a [`crate::proto::Bundle`] (one per signer is all a bundle needs).
pub const MAX_ATTESTATIONS: usize = 8;

/// A message's shape as far as the pre-pass needs it.
#[derive(Debug)]
pub struct Shape {
    /// The message's name, for errors.
    pub name: &'static str,
    /// Its repeated fields: tag, field name, most elements.
    pub repeated: &'static [(u32, &'static str, usize)],
    /// Its message fields whose own repeated fields are counted too: tag, shape.
    pub nested: &'static [(u32, &'static Shape)],
}

/// Why the pre-pass refused a message.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitError {
    /// A repeated field holds more elements than its cap.
    #[error("{message}.{field} holds more than {max} elements")]
    TooMany {
        /// The message holding the field.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// Its cap.
        max: usize,
    },
    /// Not valid protobuf.
    #[error("not valid protobuf: {0}")]
    Malformed(String),
}

/// Checks every repeated field of `bytes`, a message of `shape`, against its cap, allocating nothing that
/// grows with the input.
pub fn check(bytes: &[u8], shape: &'static Shape) -> Result<(), LimitError> {
    // (message, tag) → elements so far; at most one entry per repeated field of the shapes.
    let mut counts: Vec<(&'static str, u32, usize)> = Vec::new();
    walk(bytes, shape, &mut counts)
}

fn walk(
    mut buf: &[u8],
    shape: &'static Shape,
    counts: &mut Vec<(&'static str, u32, usize)>,
) -> Result<(), LimitError> {
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(malformed)?;
        if let Some(&(_, field, max)) = shape.repeated.iter().find(|(t, ..)| *t == tag) {
            let at = match counts
                .iter()
                .position(|(m, t, _)| *m == shape.name && *t == tag)
            {
                Some(at) => at,
                None => {
                    counts.push((shape.name, tag, 0));
                    counts.len() - 1
                }
            };
            counts[at].2 += 1;
            if counts[at].2 > max {
                return Err(LimitError::TooMany {
                    message: shape.name,
                    field,
                    max,
                });
            }
        } else if let Some(&(_, nested)) = shape.nested.iter().find(|(t, _)| *t == tag)
            && wire_type == WireType::LengthDelimited
        {
            let len = decode_varint(&mut buf).map_err(malformed)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&len| len <= buf.len())
                .ok_or_else(|| LimitError::Malformed("a length past the end".into()))?;
            let (inner, rest) = buf.split_at(len);
            walk(inner, nested, counts)?;
            buf = rest;
            continue;
        }
        skip_field(wire_type, tag, &mut buf, DecodeContext::default()).map_err(malformed)?;
    }
    Ok(())
}

fn malformed(e: prost::DecodeError) -> LimitError {
    LimitError::Malformed(e.to_string())
}

/// A batch message: one repeated field (tag 1) of per-record elements.
macro_rules! records {
    ($name:literal, $field:literal) => {
        Shape {
            name: $name,
            repeated: &[(1, $field, MAX_BATCH_RECORDS)],
            nested: &[],
        }
    };
}

static REQUEST_CONNECTION: Shape = Shape {
    name: "RequestConnection",
    repeated: &[(4, "alpn", MAX_ALPN)],
    nested: &[],
};
static REDACTED_REQUEST: Shape = Shape {
    name: "RedactedRequest",
    repeated: &[
        (2, "commitments", MAX_REQUEST_RANGES),
        (3, "ranges", MAX_REQUEST_RANGES),
    ],
    nested: &[],
};
static REDACTION_STREAMS: Shape = Shape {
    name: "RedactionStreams",
    repeated: &[
        (1, "streams", MAX_REQUEST_RANGES),
        (2, "commitment_keys", MAX_REQUEST_RANGES),
    ],
    nested: &[],
};
static ENCRYPTED_REQUEST: Shape = Shape {
    name: "EncryptedRequest",
    repeated: &[
        (3, "commitments", MAX_REQUEST_RANGES),
        (6, "ranges", MAX_REQUEST_RANGES),
        (8, "masked_ranges", MAX_REQUEST_RANGES),
        (10, "in_target", MAX_REQUEST_RANGES),
    ],
    nested: &[],
};
static ENCRYPTED_RESPONSES: Shape = records!("BatchedEncryptedResponses", "responses");
static RESPONSE_LENGTHS: Shape = records!("BatchedResponseLengths", "lengths");
static TAG_SECRETS: Shape = records!("BatchedTagSecrets", "secrets");
static TAG_VERIFICATIONS: Shape = records!("BatchedTagVerifications", "verifications");
static DECRYPTION_STREAMS: Shape = records!("BatchedDecryptionStreams", "streams");
static REDACTION_SPEC: Shape = Shape {
    name: "ResponseRedactionSpec",
    repeated: &[(1, "hidden", MAX_HIDDEN_RANGES)],
    nested: &[],
};
static FINISHED: Shape = Shape {
    name: "Finished",
    repeated: &[(2, "response_ranges", MAX_HIDDEN_RANGES)],
    nested: &[],
};

/// [`crate::proto::Envelope`]: the bodies with repeated fields (the others have none).
pub static ENVELOPE: Shape = Shape {
    name: "Envelope",
    repeated: &[],
    nested: &[
        (12, &REQUEST_CONNECTION),
        (17, &REDACTED_REQUEST),
        (18, &REDACTION_STREAMS),
        (19, &ENCRYPTED_REQUEST),
        (21, &ENCRYPTED_RESPONSES),
        (22, &RESPONSE_LENGTHS),
        (23, &TAG_SECRETS),
        (24, &TAG_VERIFICATIONS),
        (25, &DECRYPTION_STREAMS),
        (26, &REDACTION_SPEC),
        (27, &FINISHED),
    ],
};

/// [`crate::proto::Bundle`]: its only repeated field is `attestations` (the signed bodies inside are
/// decoded only once their signatures verified with a pinned signer).
pub static BUNDLE: Shape = Shape {
    name: "Bundle",
    repeated: &[(3, "attestations", MAX_ATTESTATIONS)],
    nested: &[],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        BatchedEncryptedResponses, Body, EncryptedResponse, Envelope, Finished, ResponseRange,
    };
    use prost::Message;

    fn envelope(body: Body) -> Vec<u8> {
        Envelope {
            session_id: vec![1; 16],
            body: Some(body),
        }
        .encode_to_vec()
    }

    #[test]
    fn the_smallest_real_record_is_counted_right() {
        let record = EncryptedResponse {
            tag: vec![0; 16],
            header: vec![23, 3, 3, 0, 16],
            ..Default::default()
        };
        // The element's key and length byte come on top of its encoded length.
        assert!(record.encoded_len() + 2 >= MIN_RECORD_ENCODING);
    }

    #[test]
    fn caps_are_enforced_over_merged_occurrences() {
        let at_cap = envelope(Body::Finished(Finished {
            nonce: Vec::new(),
            response_ranges: vec![ResponseRange::default(); MAX_HIDDEN_RANGES],
        }));
        assert_eq!(check(&at_cap, &ENVELOPE), Ok(()));
        // The same body twice: prost would merge the two lists, so the counts add up.
        let mut twice = at_cap.clone();
        twice.extend_from_slice(&envelope(Body::Finished(Finished {
            nonce: Vec::new(),
            response_ranges: vec![ResponseRange::default()],
        })));
        assert_eq!(
            check(&twice, &ENVELOPE),
            Err(LimitError::TooMany {
                message: "Finished",
                field: "response_ranges",
                max: MAX_HIDDEN_RANGES
            })
        );
    }

    #[test]
    fn a_real_batch_passes_and_garbage_is_malformed() {
        let batch = envelope(Body::BatchedEncryptedResponses(BatchedEncryptedResponses {
            responses: vec![
                EncryptedResponse {
                    ciphertext: vec![5; 100].into(),
                    tag: vec![0; 16],
                    header: vec![23, 3, 3, 0, 116],
                    seq: 3,
                    explicit_iv: Vec::new(),
                };
                1000
            ],
            eof: true,
        }));
        assert_eq!(check(&batch, &ENVELOPE), Ok(()));
        for junk in [
            &[0xff_u8][..],
            &[0x0a, 0x40],
            &[0x08],
            &[0xaa, 0x01, 0x05, 0x0a],
        ] {
            assert!(matches!(
                check(junk, &ENVELOPE),
                Err(LimitError::Malformed(_))
            ));
        }
    }
}
