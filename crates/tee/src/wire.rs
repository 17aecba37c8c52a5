//! The codec of the session messages: one [`Envelope`] per channel message, with a size limit, a session-id
//! check and a clear error for an unknown message (reference gap 12: an unknown message type crashed TEE_T's
//! handler; here it is an error that ends that session only). No protocol logic lives here, so fuzz targets
//! can hit the codec alone. Before decoding, [`limits`] bounds every repeated field, so a message never
//! decodes into much more memory than its own size.

pub mod limits;

use crate::proto::{Body, Envelope, Error as ErrorMessage};
use prost::Message;
use thiserror::Error;

/// Length of a session id.
pub const SESSION_ID_LEN: usize = 16;

/// Largest accepted message: a batch of response records (the client batches at most this much).
pub const MAX_MESSAGE_LEN: usize = 8 * 1024 * 1024;

/// A session id on the wire.
pub type WireSessionId = [u8; SESSION_ID_LEN];

/// Why a message was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Larger than [`MAX_MESSAGE_LEN`].
    #[error("message of {0} bytes exceeds the limit of {MAX_MESSAGE_LEN}")]
    Oversized(usize),
    /// Not a valid protobuf `Envelope`.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A well-formed envelope whose body this version does not know (or no body).
    #[error("unknown or empty message")]
    UnknownMessage,
    /// The session id is not 16 bytes.
    #[error("session id must be 16 bytes, got {0}")]
    BadSessionId(usize),
    /// The message belongs to another session than the one it arrived on.
    #[error("message for another session")]
    WrongSession,
    /// A repeated field holds more elements than [`limits`] allows (refused before decoding).
    #[error("message refused: {message}.{field} holds more than {max} elements")]
    TooManyElements {
        /// The message holding the field.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// Its cap.
        max: usize,
    },
}

impl From<limits::LimitError> for WireError {
    fn from(e: limits::LimitError) -> Self {
        match e {
            limits::LimitError::TooMany {
                message,
                field,
                max,
            } => WireError::TooManyElements {
                message,
                field,
                max,
            },
            limits::LimitError::Malformed(reason) => WireError::Malformed(reason),
        }
    }
}

/// Encodes one message of `session`.
pub fn encode(session: &WireSessionId, body: Body) -> Vec<u8> {
    Envelope {
        session_id: session.to_vec(),
        body: Some(body),
    }
    .encode_to_vec()
}

/// An error message ending `session`, with its reason.
pub fn error_message(session: &WireSessionId, reason: impl Into<String>) -> Vec<u8> {
    encode(
        session,
        Body::Error(ErrorMessage {
            reason: reason.into(),
        }),
    )
}

/// [`decode`] for a message received on a channel: once decoded, the message's buffer is zeroized
/// ([`tessera_session::scrub`]) — it may carry keystreams, tag secrets or redaction streams, which the body
/// now holds as copies — unless the body still refers to it (ciphertext slices, which are not secret).
pub fn decode_received(
    bytes: bytes::Bytes,
    expected: Option<&WireSessionId>,
) -> Result<(WireSessionId, Body), WireError> {
    let decoded = decode(bytes.clone(), expected);
    tessera_session::scrub(bytes);
    decoded
}

/// Decodes one message; with `expected`, a message of another session is refused. Given a `Bytes`
/// (a received channel message), the bulk fields are slices of it rather than copies. Every repeated field
/// is counted against its cap ([`limits::ENVELOPE`]) before anything is decoded.
pub fn decode(
    mut bytes: impl bytes::Buf,
    expected: Option<&WireSessionId>,
) -> Result<(WireSessionId, Body), WireError> {
    if bytes.remaining() > MAX_MESSAGE_LEN {
        return Err(WireError::Oversized(bytes.remaining()));
    }
    // One contiguous buffer for the pre-pass: a `Bytes` is split off without a copy.
    let bytes = bytes.copy_to_bytes(bytes.remaining());
    limits::check(&bytes, &limits::ENVELOPE)?;
    let envelope = Envelope::decode(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    let session: WireSessionId = envelope
        .session_id
        .as_slice()
        .try_into()
        .map_err(|_| WireError::BadSessionId(envelope.session_id.len()))?;
    if expected.is_some_and(|e| *e != session) {
        return Err(WireError::WrongSession);
    }
    let body = envelope.body.ok_or(WireError::UnknownMessage)?;
    Ok((session, body))
}

/// The message's name as the reference spells it (for logs and error reasons).
pub fn body_name(body: &Body) -> &'static str {
    match body {
        Body::SessionCreated(_) => "session_created",
        Body::SessionReady(_) => "session_ready",
        Body::RequestConnection(_) => "request_connection",
        Body::ConnectionReady(_) => "connection_ready",
        Body::TcpReady(_) => "tcp_ready",
        Body::TcpData(_) => "tcp_data",
        Body::HandshakeComplete(_) => "handshake_complete",
        Body::RedactedRequest(_) => "redacted_request",
        Body::RedactionStreams(_) => "redaction_streams",
        Body::EncryptedRequest(_) => "encrypted_request",
        Body::EncryptedData(_) => "encrypted_data",
        Body::BatchedEncryptedResponses(_) => "batched_encrypted_responses",
        Body::BatchedResponseLengths(_) => "batched_response_lengths",
        Body::BatchedTagSecrets(_) => "batched_tag_secrets",
        Body::BatchedTagVerifications(_) => "batched_tag_verifications",
        Body::BatchedDecryptionStreams(_) => "batched_decryption_streams",
        Body::ResponseRedactionSpec(_) => "response_redaction_spec",
        Body::Finished(_) => "finished",
        Body::TOutputDigest(_) => "t_output_digest",
        Body::SignedMessage(_) => "signed_message",
        Body::Error(_) => "error",
        Body::NewSession(_) => "new_session",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{DecryptionStream, RecordTagSecrets, RedactionStreams, TcpData};

    const S: WireSessionId = [7; 16];

    #[test]
    fn round_trip_and_session_check() {
        let bytes = encode(
            &S,
            Body::TcpData(TcpData {
                data: vec![1, 2, 3],
            }),
        );
        let (session, body) = decode(&bytes[..], Some(&S)).unwrap();
        assert_eq!(session, S);
        assert_eq!(
            body,
            Body::TcpData(TcpData {
                data: vec![1, 2, 3]
            })
        );
        assert_eq!(body_name(&body), "tcp_data");
        assert_eq!(
            decode(&bytes[..], Some(&[8; 16])),
            Err(WireError::WrongSession)
        );
    }

    #[test]
    fn unknown_empty_oversized_and_garbage_are_errors() {
        // Field 99 (unknown body) of an envelope with a valid session id: prost skips it, the body is empty.
        let mut unknown = Envelope {
            session_id: S.to_vec(),
            body: None,
        }
        .encode_to_vec();
        unknown.extend_from_slice(&[0x9a, 0x06, 0x00]); // tag 99, length-delimited, empty
        assert_eq!(decode(&unknown[..], None), Err(WireError::UnknownMessage));
        let short = Envelope {
            session_id: vec![1; 3],
            body: None,
        }
        .encode_to_vec();
        assert_eq!(decode(&short[..], None), Err(WireError::BadSessionId(3)));
        assert_eq!(
            decode(&vec![0; MAX_MESSAGE_LEN + 1][..], None),
            Err(WireError::Oversized(MAX_MESSAGE_LEN + 1))
        );
        for junk in [&[0xff_u8][..], &[0x0a, 0x40], &[0x08]] {
            assert!(matches!(decode(junk, None), Err(WireError::Malformed(_))));
        }
        let (_, body) = decode(&error_message(&S, "bad tag")[..], None).unwrap();
        assert_eq!(body_name(&body), "error");
    }

    /// A length-delimited field: key, varint length, bytes.
    fn field(tag: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn millions_of_empty_elements_are_refused_before_decoding() {
        // Just under 8 MiB: 4 M empty `EncryptedResponse`s (2 bytes each), ~0.45 GB once decoded.
        let empties = [0x0a, 0x00].repeat(4_000_000);
        let mut message = field(1, &S);
        message.extend(field(21, &empties));
        assert!(message.len() <= MAX_MESSAGE_LEN);
        // Compared as `.err()`: a decoded body would print millions of elements.
        let refused = Some(WireError::TooManyElements {
            message: "BatchedEncryptedResponses",
            field: "responses",
            max: limits::MAX_BATCH_RECORDS,
        });
        assert_eq!(decode(&message[..], Some(&S)).err(), refused);
        assert_eq!(
            decode_received(bytes::Bytes::from(message), Some(&S)).err(),
            refused
        );
        // The same spread over many occurrences of the body (prost would merge them).
        let one = field(21, &[0x0a, 0x00].repeat(1000));
        let mut spread = field(1, &S);
        for _ in 0..=limits::MAX_BATCH_RECORDS / 1000 {
            spread.extend_from_slice(&one);
        }
        assert_eq!(decode(&spread[..], Some(&S)).err(), refused);
        // Empty request ranges in `encrypted_request` and hidden ranges in `finished`.
        let mut ranges = field(1, &S);
        ranges.extend(field(
            19,
            &[0x32, 0x00].repeat(limits::MAX_REQUEST_RANGES + 1),
        ));
        assert!(matches!(
            decode(&ranges[..], None).err(),
            Some(WireError::TooManyElements {
                field: "ranges",
                ..
            })
        ));
        let mut hidden = field(1, &S);
        hidden.extend(field(
            27,
            &[0x12, 0x00].repeat(limits::MAX_HIDDEN_RANGES + 1),
        ));
        assert!(matches!(
            decode(&hidden[..], None).err(),
            Some(WireError::TooManyElements {
                field: "response_ranges",
                ..
            })
        ));
    }

    #[test]
    fn secret_messages_print_lengths_only() {
        let secret = vec![0x5a; 32];
        let texts = [
            format!(
                "{:?}",
                RedactionStreams {
                    streams: vec![secret.clone()],
                    commitment_keys: vec![secret.clone()]
                }
            ),
            format!(
                "{:?}",
                RecordTagSecrets {
                    seq: 1,
                    tag_secrets: secret.clone(),
                    tail_keystream: secret.clone()
                }
            ),
            format!(
                "{:?}",
                DecryptionStream {
                    seq: 1,
                    keystream: secret.clone()
                }
            ),
        ];
        for text in texts {
            assert!(
                text.contains("<redacted, len ") && !text.contains("90"),
                "{text}"
            );
        }
    }
}
