//! The split record layer: TEE_K's two traffic directions ([`TeeKWriter`], [`TeeKReader`]) with their
//! sequence numbers, and the composition of TEE_K, TEE_T and client steps for one record
//! ([`seal_via_split`], [`open_via_split`]).
//!
//! TEE_K sees only what it needs: to encrypt, the (redacted) plaintext; to open, a record's header and
//! explicit nonce — never the response ciphertext. TEE_T sees ciphertext, AAD and tag secrets — never a key.

use crate::content::{HandshakeMessage, RecordContent, parse_content};
use crate::error::{Result, TeeError};
use crate::key_update::TrafficSecret;
use crate::nonce::{NONCE_LEN, gcm_tls12_nonce, record_overhead, tls12_aad, tls13_aad, xor_nonce};
use crate::record::{
    ContentType, EXPLICIT_NONCE_LEN, LEGACY_VERSION, MAX_PLAINTEXT, Record, RecordHeader, TAG_LEN,
};
use crate::split::{Keystream, Tag, TagSecrets, TeeKKeys, compute_tag, verify_tag};
use crate::suite::{CipherSuite, TlsVersion};
use std::fmt;
use tessera_session::Secret;

/// Key, IV and sequence number of one direction, shared by writer and reader; in TLS 1.3 also the traffic
/// secret, for KeyUpdate.
struct Direction {
    suite: CipherSuite,
    keys: TeeKKeys,
    iv: Secret<NONCE_LEN>,
    seq: u64,
    traffic_secret: Option<TrafficSecret>,
}

impl Direction {
    fn new(suite: CipherSuite, key: &[u8], iv: &[u8], seq: u64) -> Result<Self> {
        let iv = Secret::from_slice(iv).ok_or(TeeError::KeyLength {
            what: "IV",
            expected: NONCE_LEN,
            got: iv.len(),
        })?;
        Ok(Direction {
            suite,
            keys: TeeKKeys::new(suite.aead(), key)?,
            iv,
            seq,
            traffic_secret: None,
        })
    }

    fn from_traffic_secret(suite: CipherSuite, secret: &[u8], seq: u64) -> Result<Self> {
        let secret = TrafficSecret::new(suite, secret)?;
        let mut d = Direction::new(
            suite,
            secret.key()?.expose_secret(),
            secret.iv()?.expose_secret(),
            seq,
        )?;
        d.traffic_secret = Some(secret);
        Ok(d)
    }

    /// Moves to the next key generation (RFC 8446 §7.2); sequence numbers restart at 0.
    fn update(&mut self) -> Result<()> {
        let next = self
            .traffic_secret
            .as_ref()
            .ok_or(TeeError::KeyUpdateUnsupported)?
            .next()?;
        self.keys = TeeKKeys::new(self.suite.aead(), next.key()?.expose_secret())?;
        self.iv = next.iv()?;
        self.traffic_secret = Some(next);
        self.seq = 0;
        Ok(())
    }

    /// Takes the current sequence number and advances; a record may never reuse one.
    fn take_seq(&mut self) -> Result<u64> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(TeeError::SequenceExhausted)?;
        Ok(seq)
    }
}

impl fmt::Debug for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direction")
            .field("suite", &self.suite)
            .field("keys", &self.keys)
            .field("iv", &self.iv)
            .field("seq", &self.seq)
            .field("traffic_secret", &self.traffic_secret)
            .finish()
    }
}

/// TEE_K's client-to-server direction: encrypts request records, leaving the tag to TEE_T.
#[derive(Debug)]
pub struct TeeKWriter(Direction);

/// A record encrypted by TEE_K, waiting for its tag from TEE_T.
#[derive(Debug)]
pub struct OutgoingRecord {
    /// Sequence number the record was encrypted under.
    pub seq: u64,
    /// The record header that will go on the wire.
    pub header: RecordHeader,
    /// TLS 1.2 AES-GCM only: the explicit nonce that precedes the ciphertext.
    pub explicit_nonce: Option<[u8; EXPLICIT_NONCE_LEN]>,
    /// The AAD the tag covers.
    pub aad: Vec<u8>,
    /// The ciphertext (TEE_T may XOR redaction streams into it before tagging).
    pub ciphertext: Vec<u8>,
    /// What TEE_T needs to make the tag.
    pub tag_secrets: TagSecrets,
}

impl OutgoingRecord {
    /// Frames the record with TEE_T's tag: header ‖ [explicit nonce] ‖ ciphertext ‖ tag.
    pub fn into_record(self, tag: &Tag) -> Result<Record> {
        let mut payload = self.ciphertext;
        if let Some(explicit) = self.explicit_nonce {
            payload.splice(0..0, explicit);
        }
        payload.extend_from_slice(tag);
        Record::new(self.header.content_type, payload)
    }
}

impl TeeKWriter {
    /// The client-write key and IV extracted after the handshake, and the next sequence number. Such a writer
    /// cannot follow a TLS 1.3 KeyUpdate; see [`TeeKWriter::from_traffic_secret`].
    pub fn new(suite: CipherSuite, key: &[u8], iv: &[u8], seq: u64) -> Result<Self> {
        Direction::new(suite, key, iv, seq).map(TeeKWriter)
    }

    /// TLS 1.3: key and IV derived from the client application traffic secret, which also allows KeyUpdate.
    pub fn from_traffic_secret(suite: CipherSuite, secret: &[u8], seq: u64) -> Result<Self> {
        Direction::from_traffic_secret(suite, secret, seq).map(TeeKWriter)
    }

    /// TLS 1.3: encrypts a KeyUpdate message under the current keys, then moves this direction to the next
    /// generation. Send it before the next application data when the server's KeyUpdate requested one.
    pub fn encrypt_key_update(&mut self, update_requested: bool) -> Result<OutgoingRecord> {
        if self.0.traffic_secret.is_none() {
            return Err(TeeError::KeyUpdateUnsupported);
        }
        let message = [24, 0, 0, 1, u8::from(update_requested)];
        let record = self.encrypt(ContentType::Handshake, &message, 0)?;
        self.0.update()?;
        Ok(record)
    }

    /// The sequence number the next record will use.
    pub fn next_seq(&self) -> u64 {
        self.0.seq
    }

    /// The suite.
    pub fn suite(&self) -> CipherSuite {
        self.0.suite
    }

    /// Encrypts one record of `content_type` (at most 2^14 bytes). TLS 1.3 appends the inner content type and
    /// `padding` zero bytes (ignored in TLS 1.2).
    pub fn encrypt(
        &mut self,
        content_type: ContentType,
        plaintext: &[u8],
        padding: usize,
    ) -> Result<OutgoingRecord> {
        let d = &mut self.0;
        let version = d.suite.version();
        let max = match version {
            TlsVersion::Tls13 => MAX_PLAINTEXT + 1,
            TlsVersion::Tls12 => MAX_PLAINTEXT,
        };
        let gcm = d.suite.aead().is_gcm();
        let overhead = record_overhead(version, gcm);
        // One buffer for the whole payload: room for the explicit nonce and the tag, so framing never copies.
        let mut data = Vec::with_capacity(overhead + plaintext.len() + 1 + padding);
        match version {
            TlsVersion::Tls13 => {
                data.extend_from_slice(plaintext);
                data.push(content_type.to_u8());
                data.resize(plaintext.len() + 1 + padding, 0);
            }
            TlsVersion::Tls12 => data.extend_from_slice(plaintext),
        }
        if data.len() > max {
            return Err(TeeError::RecordTooLarge {
                len: data.len(),
                max,
            });
        }
        let seq = d.take_seq()?;
        let payload_len = data.len() + overhead;
        let too_large = |_| TeeError::RecordTooLarge {
            len: payload_len,
            max: version.max_ciphertext(),
        };
        let payload_len16 = u16::try_from(payload_len).map_err(too_large)?;
        let data_len16 = u16::try_from(data.len()).map_err(too_large)?;
        let iv = d.iv.expose_secret();
        // TLS 1.2 GCM: the explicit nonce is (iv XOR seq)[4..], as rustls does; unique per sequence number.
        let nonce = xor_nonce(iv, seq);
        let (outer_type, aad, explicit_nonce) = match version {
            TlsVersion::Tls13 => (
                ContentType::ApplicationData,
                tls13_aad(payload_len16).to_vec(),
                None,
            ),
            TlsVersion::Tls12 => {
                let aad = tls12_aad(seq, content_type, LEGACY_VERSION, data_len16).to_vec();
                let explicit = gcm.then(|| {
                    let mut e = [0u8; EXPLICIT_NONCE_LEN];
                    e.copy_from_slice(&nonce[4..]);
                    e
                });
                (content_type, aad, explicit)
            }
        };
        let tag_secrets = d.keys.encrypt_in_place(&nonce, &mut data)?;
        Ok(OutgoingRecord {
            seq,
            header: RecordHeader {
                content_type: outer_type,
                version: LEGACY_VERSION,
                length: payload_len16,
            },
            explicit_nonce,
            aad,
            ciphertext: data,
            tag_secrets,
        })
    }
}

/// TEE_K's server-to-client direction: from each record's header (and explicit nonce) it derives the AAD,
/// keystream and tag secrets, in sequence-number order — so records can be neither dropped nor reordered.
#[derive(Debug)]
pub struct TeeKReader(Direction);

/// What TEE_K hands out for one response record: tag secrets and AAD to TEE_T, the keystream to the client
/// (only after TEE_T verified the tag).
#[derive(Debug)]
pub struct IncomingSecrets {
    /// The record's sequence number.
    pub seq: u64,
    /// The AAD TEE_T checks the tag over.
    pub aad: Vec<u8>,
    /// The keystream for the record's ciphertext.
    pub keystream: Keystream,
    /// The tag secrets for TEE_T.
    pub tag_secrets: TagSecrets,
}

/// The parts of a protected record's payload.
#[derive(Debug, Clone, Copy)]
pub struct ProtectedPayload<'a> {
    /// TLS 1.2 AES-GCM explicit nonce.
    pub explicit_nonce: Option<&'a [u8; EXPLICIT_NONCE_LEN]>,
    /// The ciphertext.
    pub ciphertext: &'a [u8],
    /// The tag.
    pub tag: &'a [u8],
}

impl<'a> ProtectedPayload<'a> {
    /// Splits `record`'s payload for `suite`, checking the lengths.
    pub fn parse(suite: CipherSuite, record: &'a Record) -> Result<Self> {
        let version = suite.version();
        let max = version.max_ciphertext();
        if record.payload.len() > max {
            return Err(TeeError::RecordTooLarge {
                len: record.payload.len(),
                max,
            });
        }
        let explicit_len = match (version, suite.aead().is_gcm()) {
            (TlsVersion::Tls12, true) => EXPLICIT_NONCE_LEN,
            _ => 0,
        };
        let min = explicit_len + TAG_LEN + usize::from(version == TlsVersion::Tls13);
        if record.payload.len() < min {
            return Err(TeeError::MalformedRecord(
                "protected record shorter than its overhead",
            ));
        }
        let (explicit, rest) = record.payload.split_at(explicit_len);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        Ok(ProtectedPayload {
            explicit_nonce: explicit.first_chunk::<EXPLICIT_NONCE_LEN>(),
            ciphertext,
            tag,
        })
    }
}

impl TeeKReader {
    /// The server-write key and IV extracted after the handshake, and the next sequence number. Such a reader
    /// cannot follow a TLS 1.3 KeyUpdate; see [`TeeKReader::from_traffic_secret`].
    pub fn new(suite: CipherSuite, key: &[u8], iv: &[u8], seq: u64) -> Result<Self> {
        Direction::new(suite, key, iv, seq).map(TeeKReader)
    }

    /// TLS 1.3: key and IV derived from the server application traffic secret, which also allows KeyUpdate.
    pub fn from_traffic_secret(suite: CipherSuite, secret: &[u8], seq: u64) -> Result<Self> {
        Direction::from_traffic_secret(suite, secret, seq).map(TeeKReader)
    }

    /// TLS 1.3: the record just opened carried the server's KeyUpdate; later records use the next generation
    /// and restart at sequence number 0. [`open_via_split`] calls this itself.
    pub fn update_keys(&mut self) -> Result<()> {
        self.0.update()
    }

    /// The sequence number the next record will use.
    pub fn next_seq(&self) -> u64 {
        self.0.seq
    }

    /// The suite.
    pub fn suite(&self) -> CipherSuite {
        self.0.suite
    }

    /// Secrets for the next record, from its header and (TLS 1.2 AES-GCM) explicit nonce only.
    pub fn next_record_secrets(
        &mut self,
        header: &RecordHeader,
        explicit_nonce: Option<&[u8; EXPLICIT_NONCE_LEN]>,
    ) -> Result<IncomingSecrets> {
        let d = &mut self.0;
        let version = d.suite.version();
        let gcm = d.suite.aead().is_gcm();
        let payload_len = usize::from(header.length);
        if payload_len > version.max_ciphertext() {
            return Err(TeeError::RecordTooLarge {
                len: payload_len,
                max: version.max_ciphertext(),
            });
        }
        let overhead = record_overhead(version, gcm);
        let ciphertext_len = payload_len
            .checked_sub(overhead)
            .ok_or(TeeError::MalformedRecord(
                "protected record shorter than its overhead",
            ))?;
        let iv = d.iv.expose_secret();
        let (nonce, aad) = match version {
            TlsVersion::Tls13 => {
                if header.content_type != ContentType::ApplicationData {
                    return Err(TeeError::UnexpectedRecord(
                        "plaintext record after the TLS 1.3 handshake",
                    ));
                }
                let seq = d.seq;
                (xor_nonce(iv, seq), header.encode().to_vec())
            }
            TlsVersion::Tls12 => {
                if header.content_type == ContentType::ChangeCipherSpec {
                    return Err(TeeError::UnexpectedRecord(
                        "ChangeCipherSpec after the handshake",
                    ));
                }
                let nonce = if gcm {
                    let explicit = explicit_nonce.ok_or(TeeError::MalformedRecord(
                        "TLS 1.2 AES-GCM record without explicit nonce",
                    ))?;
                    gcm_tls12_nonce(iv, explicit)
                } else {
                    xor_nonce(iv, d.seq)
                };
                let len16 = u16::try_from(ciphertext_len)
                    .map_err(|_| TeeError::MalformedRecord("length"))?;
                let aad = tls12_aad(d.seq, header.content_type, header.version, len16);
                (nonce, aad.to_vec())
            }
        };
        let seq = d.take_seq()?;
        let (keystream, tag_secrets) = d.keys.record_secrets(&nonce, ciphertext_len)?;
        Ok(IncomingSecrets {
            seq,
            aad,
            keystream,
            tag_secrets,
        })
    }
}

impl TeeKReader {
    /// The keystream of `len` bytes at `offset` into the ciphertext of response record `seq` (TLS 1.2
    /// AES-GCM: with the record's explicit nonce), under the current keys: what [`Self::next_record_secrets`]
    /// gave for that record, made again. TEE_K uses it for the revealed bytes at the end of a session
    /// rather than keeping every keystream it handed out. The keys are the current generation's: after a
    /// KeyUpdate, records from before it are not covered.
    pub fn keystream_at(
        &self,
        seq: u64,
        explicit_nonce: Option<&[u8; EXPLICIT_NONCE_LEN]>,
        offset: u64,
        len: usize,
    ) -> Result<Keystream> {
        let d = &self.0;
        let iv = d.iv.expose_secret();
        let nonce = match (d.suite.version(), d.suite.aead().is_gcm()) {
            (TlsVersion::Tls12, true) => gcm_tls12_nonce(
                iv,
                explicit_nonce.ok_or(TeeError::MalformedRecord(
                    "TLS 1.2 AES-GCM record without explicit nonce",
                ))?,
            ),
            _ => xor_nonce(iv, seq),
        };
        let (keystream, _) = d.keys.record_secrets_at(&nonce, offset, len)?;
        Ok(keystream)
    }
}

/// One request record through the whole split path: TEE_K encrypts and derives tag secrets, TEE_T computes
/// the tag, the record is framed for the wire.
pub fn seal_via_split(
    writer: &mut TeeKWriter,
    content_type: ContentType,
    plaintext: &[u8],
) -> Result<Record> {
    let outgoing = writer.encrypt(content_type, plaintext, 0)?; // TEE_K
    let tag = compute_tag(&outgoing.tag_secrets, &outgoing.aad, &outgoing.ciphertext); // TEE_T
    outgoing.into_record(&tag) // client frames it
}

/// One response record through the whole split path: TEE_K derives AAD, keystream and tag secrets from the
/// header, TEE_T verifies the tag over the ciphertext, the client XORs the keystream, and the content is
/// classified (application data, post-handshake message or alert).
///
/// A TLS 1.3 KeyUpdate moves the reader to the next key generation before this returns; the caller answers
/// `update_requested` with [`seal_key_update_via_split`] before its next application data.
pub fn open_via_split(reader: &mut TeeKReader, record: &Record) -> Result<RecordContent> {
    let parts = ProtectedPayload::parse(reader.suite(), record)?;
    let secrets = reader.next_record_secrets(&record.header, parts.explicit_nonce)?; // TEE_K
    let (aad, ciphertext) = (&secrets.aad, parts.ciphertext);
    verify_tag(&secrets.tag_secrets, aad, ciphertext, parts.tag)?; // TEE_T
    let mut plaintext = parts.ciphertext.to_vec();
    secrets.keystream.apply(&mut plaintext)?; // client
    let version = reader.suite().version();
    let content = parse_content(version, record.header.content_type, plaintext)?;
    if let RecordContent::Handshake(messages) = &content
        && messages
            .iter()
            .any(|m| matches!(m, HandshakeMessage::KeyUpdate { .. }))
    {
        reader.update_keys()?; // TEE_K
    }
    Ok(content)
}

/// Our KeyUpdate through the split path (TEE_K encrypts and moves to the next generation, TEE_T tags).
pub fn seal_key_update_via_split(
    writer: &mut TeeKWriter,
    update_requested: bool,
) -> Result<Record> {
    let outgoing = writer.encrypt_key_update(update_requested)?; // TEE_K
    let tag = compute_tag(&outgoing.tag_secrets, &outgoing.aad, &outgoing.ciphertext); // TEE_T
    outgoing.into_record(&tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ContentType, RecordHeader};

    /// `keystream_at` makes again, for any piece of any earlier record, the keystream `next_record_secrets`
    /// handed out for it: TLS 1.3 and TLS 1.2 (explicit nonces), AES-GCM and ChaCha20-Poly1305.
    #[test]
    fn keystream_at_matches_what_was_handed_out() {
        for suite in CipherSuite::ALL {
            let key = vec![0x42u8; suite.aead().key_len()];
            let iv = [0x17u8; NONCE_LEN];
            let first = 3;
            let mut reader = TeeKReader::new(suite, &key, &iv, first).unwrap();
            let gcm12 = suite.version() == TlsVersion::Tls12 && suite.aead().is_gcm();
            let overhead = crate::nonce::record_overhead(suite.version(), suite.aead().is_gcm());
            let mut handed_out = Vec::new();
            for (i, len) in [100usize, 17, 4000].into_iter().enumerate() {
                let header = RecordHeader {
                    content_type: ContentType::ApplicationData,
                    version: 0x0303,
                    length: (len + overhead) as u16,
                };
                let explicit = [i as u8 + 1; EXPLICIT_NONCE_LEN];
                let secrets = reader
                    .next_record_secrets(&header, gcm12.then_some(&explicit))
                    .unwrap();
                handed_out.push((secrets.seq, explicit, secrets.keystream));
            }
            for (seq, explicit, keystream) in &handed_out {
                let whole = keystream.expose_secret();
                for (offset, len) in [(0, whole.len()), (1, 5), (whole.len() - 3, 3)] {
                    let again = reader
                        .keystream_at(*seq, gcm12.then_some(explicit), offset as u64, len)
                        .unwrap();
                    assert_eq!(
                        again.expose_secret(),
                        &whole[offset..offset + len],
                        "{suite:?} seq {seq}"
                    );
                }
            }
            if gcm12 {
                assert!(reader.keystream_at(first, None, 0, 1).is_err());
            }
        }
    }
}
