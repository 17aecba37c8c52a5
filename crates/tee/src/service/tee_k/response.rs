//! TEE_K's view of a session's response (steps 9-11): tag secrets from record headers, keystreams for the
//! records TEE_T verified, and at the end the keystream of the revealed bytes, made again from the keys
//! (TEE_K keeps no keystream it handed out). It never sees the ciphertext.

use super::session::MAX_RANGES;
use crate::nonce::record_overhead;
use crate::proto::{
    BatchedDecryptionStreams, BatchedResponseLengths, BatchedTagSecrets, BatchedTagVerifications,
    Body, DecryptionStream, RecordInfo, RecordTagSecrets, ResponseRange,
};
use crate::record::{ContentType, EXPLICIT_NONCE_LEN, HEADER_LEN, RecordHeader};
use crate::record_layer::TeeKReader;
use crate::service::common::{Fail, scrub};
use crate::split::Keystream;
use crate::suite::{CipherSuite, TlsVersion};
use crate::tls_client::EstablishedSession;

/// A record TEE_K made secrets for and TEE_T has not verified yet.
struct Outstanding {
    seq: u64,
    explicit: Option<[u8; EXPLICIT_NONCE_LEN]>,
    keystream: Keystream,
    header_type: ContentType,
    ciphertext_len: usize,
}

/// An application-data record TEE_T verified and whose keystream went to the client: where its bytes sit
/// in the response, and what makes its keystream again.
struct Delivered {
    seq: u64,
    explicit: Option<[u8; EXPLICIT_NONCE_LEN]>,
    /// Offset of its first byte in the response (the application data, records concatenated).
    start: usize,
    len: usize,
}

/// TEE_K's view of the response: lengths, types, keystreams; never the ciphertext.
pub(super) struct Response {
    suite: CipherSuite,
    outstanding: Vec<Outstanding>,
    pub(super) records: Vec<RecordInfo>,
    delivered: Vec<Delivered>,
    /// The application data's length so far.
    content_len: usize,
    pub(super) total: usize,
    /// Ciphertext plus [`crate::service::common::RECORD_CHARGE`] per record, against `max_response`.
    charged: usize,
    closed: bool,
}

impl Response {
    pub(super) fn new(suite: CipherSuite) -> Self {
        Response {
            suite,
            outstanding: Vec::new(),
            records: Vec::new(),
            delivered: Vec::new(),
            content_len: 0,
            total: 0,
            charged: 0,
            closed: false,
        }
    }

    /// Step 9: From each record's header (and explicit nonce): tag secrets for TEE_T, and the tail keystream that
    /// lets TEE_T read the TLS 1.3 inner type (and an alert's two bytes, which are not secret).
    pub(super) fn secrets(
        &mut self,
        est: &mut EstablishedSession,
        lengths: BatchedResponseLengths,
        limits: &crate::service::Limits,
    ) -> Result<BatchedTagSecrets, Fail> {
        if !self.outstanding.is_empty() {
            return Err(Fail::new("a batch is still being verified"));
        }
        let version = self.suite.version();
        let gcm = self.suite.aead().is_gcm();
        let overhead = record_overhead(version, gcm);
        let mut out = BatchedTagSecrets::default();
        let mut alert = false;
        for length in lengths.lengths {
            if self.closed || alert {
                return Err(Fail::new("a record after close_notify"));
            }
            if length.seq != est.reader.next_seq() {
                return Err(Fail::new("response records are not contiguous"));
            }
            let header: &[u8; HEADER_LEN] = length
                .header
                .as_slice()
                .try_into()
                .map_err(|_| Fail::new("record header is not 5 bytes"))?;
            let header = RecordHeader::parse(header)?;
            let ciphertext_len = length.length as usize;
            if usize::from(header.length) != ciphertext_len + overhead {
                return Err(Fail::new("record length disagrees with its header"));
            }
            if version == TlsVersion::Tls13 && ciphertext_len == 0 {
                return Err(Fail::new("empty TLS 1.3 record"));
            }
            self.total = self.total.saturating_add(ciphertext_len);
            self.charged = self
                .charged
                .saturating_add(ciphertext_len + crate::service::common::RECORD_CHARGE);
            if self.charged > limits.max_response {
                return Err(Fail::new("response larger than the limit"));
            }
            let explicit: Option<[u8; EXPLICIT_NONCE_LEN]> = if version == TlsVersion::Tls12 && gcm
            {
                Some(
                    length
                        .explicit_iv
                        .as_slice()
                        .try_into()
                        .map_err(|_| Fail::new("explicit nonce is not 8 bytes"))?,
                )
            } else if length.explicit_iv.is_empty() {
                None
            } else {
                return Err(Fail::new("unexpected explicit nonce"));
            };
            let secrets = est.reader.next_record_secrets(&header, explicit.as_ref())?;
            let ks = secrets.keystream.expose_secret();
            let tail_len = match version {
                TlsVersion::Tls13 if ciphertext_len <= 3 => ciphertext_len,
                TlsVersion::Tls13 => 1,
                TlsVersion::Tls12 if header.content_type == ContentType::Alert => {
                    if ciphertext_len != 2 {
                        return Err(Fail::new("malformed alert record"));
                    }
                    2
                }
                TlsVersion::Tls12 => 0,
            };
            out.secrets.push(RecordTagSecrets {
                seq: secrets.seq,
                tag_secrets: secrets.tag_secrets.expose_secret().to_vec(),
                tail_keystream: ks[ciphertext_len - tail_len..].to_vec(),
            });
            self.outstanding.push(Outstanding {
                seq: secrets.seq,
                explicit,
                keystream: secrets.keystream,
                header_type: header.content_type,
                ciphertext_len,
            });
            alert = header.content_type == ContentType::Alert;
        }
        Ok(out)
    }

    /// Step 10: Keystreams for the application data, only for records TEE_T verified. On a failure the
    /// keystreams already taken are zeroized (a sent message's are, by `send`).
    pub(super) fn verified(
        &mut self,
        verifications: BatchedTagVerifications,
    ) -> Result<BatchedDecryptionStreams, Fail> {
        let mut streams = BatchedDecryptionStreams::default();
        match self.take_verified(verifications, &mut streams) {
            Ok(()) => Ok(streams),
            Err(e) => {
                scrub(&mut Body::BatchedDecryptionStreams(streams));
                Err(e)
            }
        }
    }

    fn take_verified(
        &mut self,
        verifications: BatchedTagVerifications,
        streams: &mut BatchedDecryptionStreams,
    ) -> Result<(), Fail> {
        let outstanding = std::mem::take(&mut self.outstanding);
        if verifications.verifications.len() != outstanding.len() {
            return Err(Fail::new("TEE_T verified a different number of records"));
        }
        let tls13 = self.suite.version() == TlsVersion::Tls13;
        for (v, record) in verifications.verifications.iter().zip(outstanding) {
            if v.seq != record.seq || !v.verified {
                return Err(Fail::new("a response record failed verification"));
            }
            if self.closed {
                return Err(Fail::new("a record after close_notify"));
            }
            let content_type = u8::try_from(v.content_type)
                .ok()
                .and_then(|t| ContentType::try_from(t).ok())
                .ok_or(Fail::new("unknown content type"))?;
            if !tls13 && content_type != record.header_type {
                return Err(Fail::new("content type differs from the record header"));
            }
            let length = record.ciphertext_len - usize::from(tls13);
            match content_type {
                ContentType::ApplicationData => {
                    if record.keystream.len() < length {
                        return Err(Fail::new("keystream shorter than its record"));
                    }
                    if length > 0 {
                        self.delivered.push(Delivered {
                            seq: record.seq,
                            explicit: record.explicit,
                            start: self.content_len,
                            len: length,
                        });
                    }
                    self.content_len += length;
                    // Moved, not copied: `send` zeroizes it once encoded.
                    streams.streams.push(DecryptionStream {
                        seq: record.seq,
                        keystream: record.keystream.into_message_bytes(length),
                    });
                }
                ContentType::Alert => self.closed = true, // TEE_T checked it is close_notify
                ContentType::Handshake if tls13 => {}     // tickets: counted, never content
                _ => return Err(Fail::new("unexpected record type after the handshake")),
            }
            self.records.push(RecordInfo {
                seq: record.seq,
                content_type: u32::from(content_type.to_u8()),
                length: u32::try_from(length).map_err(|_| Fail::new("record length"))?,
            });
        }
        streams.closed = self.closed;
        Ok(())
    }

    /// Completion: nothing outstanding, the end proven by close_notify, the hidden ranges valid. Returns the
    /// revealed spans of the response (the gaps between the hidden ranges, and the tail), for
    /// [`Response::revealed_keystream`].
    pub(super) fn finish(&mut self, hidden: &[ResponseRange]) -> Result<RevealedSpans, Fail> {
        if !self.outstanding.is_empty() {
            return Err(Fail::new(
                "response_redaction_spec before every record was verified",
            ));
        }
        if !self.closed {
            return Err(Fail::new(
                "the response end is not proven: the server closed without close_notify",
            ));
        }
        if hidden.len() > MAX_RANGES {
            return Err(Fail::new("too many hidden ranges"));
        }
        let whole = self.content_len;
        let mut spans = Vec::with_capacity(hidden.len() + 1);
        let mut end_of_previous = 0u64;
        for range in hidden {
            let end = range
                .start
                .checked_add(range.length)
                .filter(|&e| e <= whole as u64 && range.length > 0)
                .ok_or(Fail::new("hidden range out of bounds or empty"))?;
            if range.start < end_of_previous {
                return Err(Fail::new("hidden ranges overlap or are unsorted"));
            }
            spans.push((end_of_previous as usize, range.start as usize));
            end_of_previous = end;
        }
        spans.push((end_of_previous as usize, whole));
        spans.retain(|(s, e)| s < e);
        Ok(RevealedSpans(spans))
    }

    /// The keystream of the revealed bytes, made again record piece by record piece from the keys TEE_K
    /// still holds (the service never follows a KeyUpdate, so every response record is under `reader`'s
    /// keys). Only it is signed (its SHA-256) and carried in the bundle.
    pub(super) fn revealed_keystream(
        &self,
        reader: &TeeKReader,
        spans: &RevealedSpans,
    ) -> Result<Vec<u8>, Fail> {
        let mut revealed = Vec::with_capacity(spans.0.iter().map(|(s, e)| e - s).sum());
        let mut records = self.delivered.iter().peekable();
        for &(start, end) in &spans.0 {
            while let Some(record) = records.peek() {
                let record_end = record.start + record.len;
                if record_end <= start {
                    records.next();
                    continue;
                }
                if record.start >= end {
                    break;
                }
                let (from, to) = (start.max(record.start), end.min(record_end));
                let keystream = reader
                    .keystream_at(
                        record.seq,
                        record.explicit.as_ref(),
                        (from - record.start) as u64,
                        to - from,
                    )
                    .map_err(|e| Fail(format!("revealed keystream: {e}")))?;
                revealed.extend_from_slice(keystream.expose_secret());
                if record_end > end {
                    break;
                }
                records.next();
            }
        }
        Ok(revealed)
    }
}

/// The revealed stretches of the response, `(start, end)`, sorted, non-empty, in bounds.
pub(super) struct RevealedSpans(Vec<(usize, usize)>);
