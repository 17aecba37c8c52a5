//! TLS record framing (the codec only): content types, the 5-byte header, whole records, and the
//! [`RecordSplitter`] that turns arbitrary TCP chunks into whole records under a size limit.

use crate::error::{Result, TeeError};

/// Length of a record header: type(1) || version(2) || length(2).
pub const HEADER_LEN: usize = 5;
/// Length of an AEAD tag (all nine suites).
pub const TAG_LEN: usize = 16;
/// Length of the TLS 1.2 AES-GCM explicit nonce carried in each record.
pub const EXPLICIT_NONCE_LEN: usize = 8;
/// Largest plaintext fragment: 2^14.
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Largest TLS 1.3 record payload: 2^14 + 256 (RFC 8446 §5.2).
pub const MAX_CIPHERTEXT_TLS13: usize = (1 << 14) + 256;
/// Largest TLS 1.2 record payload: 2^14 + 2048 (RFC 5246 §6.2.3).
pub const MAX_CIPHERTEXT_TLS12: usize = (1 << 14) + 2048;
/// The record-layer version every TLS 1.2 and 1.3 record carries after the handshake.
pub const LEGACY_VERSION: u16 = 0x0303;

/// A TLS record content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ContentType {
    /// 20
    ChangeCipherSpec = 20,
    /// 21
    Alert = 21,
    /// 22
    Handshake = 22,
    /// 23
    ApplicationData = 23,
    /// 24
    Heartbeat = 24,
}

impl ContentType {
    /// The wire byte.
    pub fn to_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for ContentType {
    type Error = TeeError;

    fn try_from(byte: u8) -> Result<Self> {
        Ok(match byte {
            20 => ContentType::ChangeCipherSpec,
            21 => ContentType::Alert,
            22 => ContentType::Handshake,
            23 => ContentType::ApplicationData,
            24 => ContentType::Heartbeat,
            _ => return Err(TeeError::MalformedRecord("unknown content type")),
        })
    }
}

/// A parsed record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// The outer content type.
    pub content_type: ContentType,
    /// The record-layer version (0x0303 after the handshake; 0x0301 may appear in the first flight).
    pub version: u16,
    /// Payload length in bytes.
    pub length: u16,
}

impl RecordHeader {
    /// Parses a header; rejects unknown content types and versions outside 3.x.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Self> {
        let content_type = ContentType::try_from(bytes[0])?;
        if bytes[1] != 3 {
            return Err(TeeError::MalformedRecord("record version is not 3.x"));
        }
        Ok(RecordHeader {
            content_type,
            version: u16::from_be_bytes([bytes[1], bytes[2]]),
            length: u16::from_be_bytes([bytes[3], bytes[4]]),
        })
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [v0, v1] = self.version.to_be_bytes();
        let [l0, l1] = self.length.to_be_bytes();
        [self.content_type.to_u8(), v0, v1, l0, l1]
    }
}

/// A whole TLS record: header and payload (for a protected record: explicit nonce, ciphertext and tag).
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// The header as parsed.
    pub header: RecordHeader,
    /// Exactly `header.length` bytes.
    pub payload: Vec<u8>,
}

impl Record {
    /// Builds a record from a payload; fails if the payload does not fit the 16-bit length field.
    pub fn new(content_type: ContentType, payload: Vec<u8>) -> Result<Self> {
        let length = u16::try_from(payload.len()).map_err(|_| TeeError::RecordTooLarge {
            len: payload.len(),
            max: u16::MAX as usize,
        })?;
        Ok(Record {
            header: RecordHeader {
                content_type,
                version: LEGACY_VERSION,
                length,
            },
            payload,
        })
    }

    /// The record as it goes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&self.header.encode());
        out.extend_from_slice(&self.payload);
        out
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("header", &self.header)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Turns a TCP byte stream, cut anywhere, into whole TLS records.
///
/// Memory stays bounded: [`RecordSplitter::push`] returns every complete record at once, so what stays
/// buffered is always less than one record (header plus at most `max_payload` bytes). A header announcing more
/// than `max_payload` is an error before any of its payload is buffered.
#[derive(Debug)]
pub struct RecordSplitter {
    buf: Vec<u8>,
    max_payload: usize,
}

impl RecordSplitter {
    /// A splitter accepting payloads up to `max_payload` bytes (see [`crate::TlsVersion::max_ciphertext`]).
    pub fn new(max_payload: usize) -> Self {
        RecordSplitter {
            buf: Vec::new(),
            max_payload,
        }
    }

    /// A splitter with the TLS 1.2 limit (2^14+2048), the larger of the two; use it before the version is known.
    pub fn any_version() -> Self {
        Self::new(MAX_CIPHERTEXT_TLS12)
    }

    /// Lowers or raises the limit, e.g. to 2^14+256 once TLS 1.3 is negotiated.
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload;
    }

    /// Appends a chunk and returns every record it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Record>> {
        self.buf.extend_from_slice(chunk);
        let mut records = Vec::new();
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            let Some(header_bytes) = rest.first_chunk::<HEADER_LEN>() else {
                break;
            };
            let header = RecordHeader::parse(header_bytes)?;
            let len = usize::from(header.length);
            if len > self.max_payload {
                return Err(TeeError::RecordTooLarge {
                    len,
                    max: self.max_payload,
                });
            }
            let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
                break;
            };
            records.push(Record {
                header,
                payload: payload.to_vec(),
            });
            start += HEADER_LEN + len;
        }
        self.buf.drain(..start);
        Ok(records)
    }

    /// Bytes buffered towards the next record.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True if no partial record is buffered (e.g. to check a stream ended on a record boundary).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(ty: ContentType, len: usize, fill: u8) -> Vec<u8> {
        Record::new(ty, vec![fill; len]).unwrap().to_bytes()
    }

    #[test]
    fn header_round_trip_and_rejects() {
        let h = RecordHeader::parse(&[23, 3, 3, 0x40, 0x11]).unwrap();
        assert_eq!(h.content_type, ContentType::ApplicationData);
        assert_eq!(h.length, 0x4011);
        assert_eq!(h.encode(), [23, 3, 3, 0x40, 0x11]);
        assert!(RecordHeader::parse(&[99, 3, 3, 0, 1]).is_err());
        assert!(RecordHeader::parse(&[23, 2, 0, 0, 1]).is_err());
    }

    #[test]
    fn splitter_enforces_the_limit_before_buffering() {
        let mut s = RecordSplitter::new(MAX_CIPHERTEXT_TLS13);
        let too_big = (MAX_CIPHERTEXT_TLS13 + 1) as u16;
        let [a, b] = too_big.to_be_bytes();
        assert!(matches!(
            s.push(&[23, 3, 3, a, b]),
            Err(TeeError::RecordTooLarge { .. })
        ));
        let mut s = RecordSplitter::new(MAX_CIPHERTEXT_TLS13);
        let ok = record(ContentType::ApplicationData, MAX_CIPHERTEXT_TLS13, 1);
        assert_eq!(s.push(&ok).unwrap().len(), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut s = RecordSplitter::any_version();
        assert!(s.push(b"GET / HTTP/1.1\r\n").is_err());
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_records(
            lens in proptest::collection::vec(0usize..3000, 1..8),
            cuts in proptest::collection::vec(0usize..20000, 0..12),
        ) {
            let mut stream = Vec::new();
            for (i, len) in lens.iter().enumerate() {
                stream.extend(record(ContentType::ApplicationData, *len, i as u8));
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut s = RecordSplitter::any_version();
            let mut got = Vec::new();
            for w in cuts.windows(2) {
                got.extend(s.push(&stream[w[0]..w[1]]).unwrap());
                prop_assert!(s.buffered() < HEADER_LEN + 3000);
            }
            prop_assert!(s.is_empty());
            prop_assert_eq!(got.len(), lens.len());
            for (i, (r, len)) in got.iter().zip(&lens).enumerate() {
                prop_assert_eq!(r.payload.len(), *len);
                prop_assert!(r.payload.iter().all(|b| *b == i as u8));
            }
        }
    }
}
