//! What a protected record carries once decrypted (the codec of record contents): the TLS 1.3 inner content
//! type and padding, and the recognition of post-handshake messages and alerts, so that none of them is ever
//! mistaken for application data.

use crate::error::{Result, TeeError};
use crate::record::{ContentType, MAX_PLAINTEXT};
use crate::suite::TlsVersion;

/// A post-handshake handshake message, by type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeMessage {
    /// TLS 1.2 HelloRequest (type 0): a renegotiation request, which this client ignores.
    HelloRequest,
    /// TLS 1.3 NewSessionTicket (type 4): skipped (no resumption).
    NewSessionTicket,
    /// TLS 1.3 KeyUpdate (type 24): the sender's next records use the next key generation. If
    /// `update_requested`, the receiver must send its own KeyUpdate before its next application data.
    KeyUpdate {
        /// The peer asked for our KeyUpdate in return.
        update_requested: bool,
    },
    /// Any other type (e.g. a CertificateRequest for post-handshake auth).
    Other(u8),
}

/// A TLS alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alert {
    /// 1 = warning, 2 = fatal.
    pub level: u8,
    /// The alert description (0 = close_notify).
    pub description: u8,
}

impl Alert {
    /// True for close_notify.
    pub fn is_close_notify(&self) -> bool {
        self.description == 0
    }
}

/// The content of an opened record.
#[derive(Clone, PartialEq, Eq)]
pub enum RecordContent {
    /// Application data: the only content that belongs to the HTTP response.
    ApplicationData(Vec<u8>),
    /// One or more post-handshake messages.
    Handshake(Vec<HandshakeMessage>),
    /// An alert (close_notify or an error).
    Alert(Alert),
}

impl std::fmt::Debug for RecordContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordContent::ApplicationData(d) => write!(f, "ApplicationData({} bytes)", d.len()),
            RecordContent::Handshake(m) => f.debug_tuple("Handshake").field(m).finish(),
            RecordContent::Alert(a) => f.debug_tuple("Alert").field(a).finish(),
        }
    }
}

/// Splits a TLS 1.3 `TLSInnerPlaintext` (content ‖ type ‖ zeros) into its real type and content.
pub fn split_inner_plaintext(mut inner: Vec<u8>) -> Result<(ContentType, Vec<u8>)> {
    let Some(type_pos) = inner.iter().rposition(|b| *b != 0) else {
        return Err(TeeError::MalformedRecord(
            "TLS 1.3 inner plaintext has no content type",
        ));
    };
    let content_type = ContentType::try_from(inner[type_pos])?;
    inner.truncate(type_pos);
    Ok((content_type, inner))
}

/// Appends the TLS 1.3 inner content type and `padding` zeros to `content`.
pub fn build_inner_plaintext(content_type: ContentType, content: &[u8], padding: usize) -> Vec<u8> {
    let mut inner = Vec::with_capacity(content.len() + 1 + padding);
    inner.extend_from_slice(content);
    inner.push(content_type.to_u8());
    inner.resize(content.len() + 1 + padding, 0);
    inner
}

/// Names the handshake messages in a record's content; a message cut off at the record end is an error.
pub fn classify_handshake(mut bytes: &[u8]) -> Result<Vec<HandshakeMessage>> {
    let mut messages = Vec::new();
    if bytes.is_empty() {
        return Err(TeeError::MalformedRecord("empty handshake record"));
    }
    while let Some((&[ty, l0, l1, l2], rest)) = bytes.split_first_chunk::<4>() {
        let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        let Some(after) = rest.get(len..) else {
            return Err(TeeError::MalformedRecord(
                "post-handshake message split across records",
            ));
        };
        let body = &rest[..len];
        messages.push(match ty {
            0 => HandshakeMessage::HelloRequest,
            4 => HandshakeMessage::NewSessionTicket,
            24 => match body {
                [0] => HandshakeMessage::KeyUpdate {
                    update_requested: false,
                },
                [1] => HandshakeMessage::KeyUpdate {
                    update_requested: true,
                },
                _ => return Err(TeeError::MalformedRecord("malformed KeyUpdate")),
            },
            other => HandshakeMessage::Other(other),
        });
        bytes = after;
    }
    if !bytes.is_empty() {
        return Err(TeeError::MalformedRecord(
            "truncated handshake message header",
        ));
    }
    Ok(messages)
}

/// Classifies a decrypted record. `outer_type` is the header's type; in TLS 1.3 the real type is inside.
///
/// Fails on a KeyUpdate that is not the last message of its TLS 1.3 record (a key change must fall on a record
/// boundary) or appears in TLS 1.2, a ChangeCipherSpec or heartbeat after the handshake, a malformed alert, and
/// content longer than 2^14 bytes. Acting on a KeyUpdate is the record layer's job
/// ([`crate::TeeKReader::update_keys`]).
pub fn parse_content(
    version: TlsVersion,
    outer_type: ContentType,
    plaintext: Vec<u8>,
) -> Result<RecordContent> {
    let (content_type, content) = match version {
        TlsVersion::Tls13 => split_inner_plaintext(plaintext)?,
        TlsVersion::Tls12 => (outer_type, plaintext),
    };
    if content.len() > MAX_PLAINTEXT {
        return Err(TeeError::RecordTooLarge {
            len: content.len(),
            max: MAX_PLAINTEXT,
        });
    }
    match content_type {
        ContentType::ApplicationData => Ok(RecordContent::ApplicationData(content)),
        ContentType::Alert => match content.as_slice() {
            [level, description] => Ok(RecordContent::Alert(Alert {
                level: *level,
                description: *description,
            })),
            _ => Err(TeeError::MalformedRecord("alert is not two bytes")),
        },
        ContentType::Handshake => {
            let messages = classify_handshake(&content)?;
            let is_update = |m: &HandshakeMessage| matches!(m, HandshakeMessage::KeyUpdate { .. });
            if let Some(pos) = messages.iter().position(is_update) {
                if version == TlsVersion::Tls12 {
                    return Err(TeeError::UnexpectedRecord("KeyUpdate in TLS 1.2"));
                }
                if pos + 1 != messages.len() {
                    return Err(TeeError::UnexpectedRecord(
                        "KeyUpdate not at the end of its record",
                    ));
                }
            }
            Ok(RecordContent::Handshake(messages))
        }
        ContentType::ChangeCipherSpec => Err(TeeError::UnexpectedRecord(
            "ChangeCipherSpec after the handshake",
        )),
        ContentType::Heartbeat => Err(TeeError::UnexpectedRecord("heartbeat record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_plaintext_round_trip_with_padding() {
        let inner = build_inner_plaintext(ContentType::ApplicationData, b"hi\0", 5);
        assert_eq!(inner, b"hi\0\x17\0\0\0\0\0");
        let (ty, content) = split_inner_plaintext(inner).unwrap();
        assert_eq!(ty, ContentType::ApplicationData);
        assert_eq!(content, b"hi\0");
        assert!(split_inner_plaintext(vec![0; 9]).is_err());
        assert!(split_inner_plaintext(vec![]).is_err());
    }

    #[test]
    fn post_handshake_records_are_never_application_data() {
        // Two NewSessionTickets in one record (an empty body each, for brevity).
        let tickets =
            build_inner_plaintext(ContentType::Handshake, &[4, 0, 0, 0, 4, 0, 0, 1, 9], 0);
        assert_eq!(
            parse_content(TlsVersion::Tls13, ContentType::ApplicationData, tickets).unwrap(),
            RecordContent::Handshake(vec![HandshakeMessage::NewSessionTicket; 2])
        );
        let key_update = build_inner_plaintext(ContentType::Handshake, &[24, 0, 0, 1, 1], 0);
        assert_eq!(
            parse_content(TlsVersion::Tls13, ContentType::ApplicationData, key_update).unwrap(),
            RecordContent::Handshake(vec![HandshakeMessage::KeyUpdate {
                update_requested: true
            }])
        );
        let not_last =
            build_inner_plaintext(ContentType::Handshake, &[24, 0, 0, 1, 0, 4, 0, 0, 0], 0);
        assert!(parse_content(TlsVersion::Tls13, ContentType::ApplicationData, not_last).is_err());
        let bad = build_inner_plaintext(ContentType::Handshake, &[24, 0, 0, 1, 2], 0);
        assert!(parse_content(TlsVersion::Tls13, ContentType::ApplicationData, bad).is_err());
        assert!(
            parse_content(
                TlsVersion::Tls12,
                ContentType::Handshake,
                vec![24, 0, 0, 1, 0]
            )
            .is_err()
        );
        let close = build_inner_plaintext(ContentType::Alert, &[1, 0], 3);
        let content =
            parse_content(TlsVersion::Tls13, ContentType::ApplicationData, close).unwrap();
        assert!(matches!(content, RecordContent::Alert(a) if a.is_close_notify()));
        // TLS 1.2: the type is the header's; an encrypted alert is an alert, not response content.
        let content = parse_content(TlsVersion::Tls12, ContentType::Alert, vec![2, 40]).unwrap();
        assert_eq!(
            content,
            RecordContent::Alert(Alert {
                level: 2,
                description: 40
            })
        );
        assert!(parse_content(TlsVersion::Tls12, ContentType::Alert, vec![1]).is_err());
        assert!(parse_content(TlsVersion::Tls12, ContentType::ChangeCipherSpec, vec![1]).is_err());
    }

    #[test]
    fn truncated_handshake_messages_are_errors() {
        assert!(classify_handshake(&[4, 0, 0, 9, 1]).is_err());
        assert!(classify_handshake(&[4, 0, 0]).is_err());
        assert!(classify_handshake(&[]).is_err());
        assert_eq!(
            classify_handshake(&[0, 0, 0, 0]).unwrap(),
            vec![HandshakeMessage::HelloRequest]
        );
    }
}
