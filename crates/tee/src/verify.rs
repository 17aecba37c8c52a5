//! The offline verifier: checks a [`Bundle`] against pinned signers and prints nothing itself.
//!
//! [`verify_bundle`] accepts a bundle only if all of these hold, and names the first that fails:
//! - both signers recover to the addresses the verifier pinned (never to an address from the bundle), and the
//!   two pinned addresses differ;
//! - both outputs carry the same 16-byte session id, K_OUTPUT carries the Keccak-256 of T_OUTPUT's exact body,
//!   and T_OUTPUT carries the [`transcript_hash`] of K_OUTPUT's session id, request ranges and records;
//! - both records lists are equal, contiguous from the first response sequence number (TLS 1.3: 0, TLS 1.2:
//!   1), the end of the response is proven by a close_notify, and the application-data lengths add up to
//!   the ciphertext's length, and, less the hidden ranges, to the keystream's;
//! - the bundle's ciphertext and keystream are the ones whose SHA-256 T_OUTPUT and K_OUTPUT signed (the
//!   keystream covers the revealed bytes only, so hidden bytes cannot be decrypted from the bundle);
//! - timestamps are at most `max_age` old, at most `max_future` ahead, and at most `max_gap` apart;
//! - both nonces are equal, and equal to the verifier's nonce when it gives one;
//! - request ranges are in bounds, sorted and disjoint; each `SENSITIVE_PROOF` range has exactly one proof
//!   stream of its length; response ranges are in bounds and disjoint.

use crate::proof_file::MAX_BUNDLE_LEN;
use crate::proto::{
    BodyType, Bundle, CertificateInfo, KOutput, RangeType, RecordInfo, RequestRange, ResponseEnd,
    SignedMessage, TOutput,
};
use crate::signing::{Address, SignatureError, keccak256, recover_signer, sha256};
use prost::Message;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

mod revealed;
use revealed::{hidden_len, reveal_response};
pub use revealed::{revealed_bytes, revealed_bytes_of, revealed_sha256};

/// TLS content types as signed in [`RecordInfo::content_type`].
const ALERT: u32 = 21;
const APPLICATION_DATA: u32 = 23;

/// Why a bundle was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The bundle, or a body inside it, is not valid protobuf.
    #[error("malformed {0}: not valid protobuf")]
    Decode(&'static str),
    /// An output is missing or has the wrong body type.
    #[error("missing or mislabelled {0}")]
    Missing(&'static str),
    /// A signature could not be checked.
    #[error("{output} signature: {source}")]
    Signature {
        /// Which output.
        output: &'static str,
        /// Why.
        source: SignatureError,
    },
    /// A signature verified, but not by the pinned signer.
    #[error("{output} is signed by {got}, not by the pinned signer {expected}")]
    WrongSigner {
        /// Which output.
        output: &'static str,
        /// The pinned address.
        expected: Address,
        /// The recovered address.
        got: Address,
    },
    /// The verifier pinned the same address for both TEEs.
    #[error("TEE_K and TEE_T must be pinned to different signers")]
    SameSigner,
    /// The two outputs do not belong to the same session and transcript.
    #[error("the outputs are not bound to each other: {0}")]
    Binding(&'static str),
    /// The records list is inconsistent (gap, wrong start, unproven end, lengths).
    #[error("records: {0}")]
    Records(&'static str),
    /// Outside the allowed time window.
    #[error("timestamp: {0}")]
    Time(&'static str),
    /// The nonce is not the verifier's.
    #[error("nonce mismatch: the outputs were not made for this verifier's nonce")]
    Nonce,
    /// A request or response range is invalid.
    #[error("ranges: {0}")]
    Ranges(&'static str),
    /// The bundle is larger than [`crate::proof_file::MAX_BUNDLE_LEN`].
    #[error("bundle of {0} bytes exceeds the limit of {MAX_BUNDLE_LEN}")]
    TooLarge(usize),
    /// A repeated field of the bundle holds more elements than [`crate::wire::limits`] allows (checked
    /// before decoding).
    #[error("bundle refused: {0}")]
    TooManyElements(crate::wire::limits::LimitError),
}

/// What the verifier trusts and accepts.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// TEE_K's pinned signer.
    pub tee_k_signer: Address,
    /// TEE_T's pinned signer.
    pub tee_t_signer: Address,
    /// The verifier's nonce, if it gave one.
    pub nonce: Option<Vec<u8>>,
    /// "Now", Unix milliseconds.
    pub now_ms: u64,
    /// Oldest accepted output.
    pub max_age_ms: u64,
    /// How far in the future an output may be (clock skew).
    pub max_future_ms: u64,
    /// How far apart the two outputs may be.
    pub max_gap_ms: u64,
}

impl VerifierConfig {
    /// Pinned signers, no nonce, now from the system clock, 10 min age, 30 s future, 5 s gap.
    pub fn new(tee_k_signer: Address, tee_t_signer: Address) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        VerifierConfig {
            tee_k_signer,
            tee_t_signer,
            nonce: None,
            now_ms,
            max_age_ms: 10 * 60 * 1000,
            max_future_ms: 30 * 1000,
            max_gap_ms: 5 * 1000,
        }
    }
}

/// A range of the request as the verifier sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevealedRange {
    /// First byte.
    pub start: usize,
    /// Length.
    pub length: usize,
}

/// What a valid bundle proves.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedProof {
    /// The shared session id.
    pub session_id: Vec<u8>,
    /// Server name and port.
    pub hostname: String,
    /// Server port.
    pub port: u32,
    /// IANA suite code.
    pub cipher_suite: u32,
    /// 0x0303 or 0x0304.
    pub tls_version: u32,
    /// The certificate TEE_K validated.
    pub certificate: Option<CertificateInfo>,
    /// K_OUTPUT's timestamp, Unix milliseconds.
    pub timestamp_ms: u64,
    /// The request: `SENSITIVE` ranges as `*`, `SENSITIVE_PROOF` ranges revealed.
    pub request: Vec<u8>,
    /// The `SENSITIVE_PROOF` ranges revealed in `request`.
    pub proof_ranges: Vec<RevealedRange>,
    /// The response: hidden ranges as `*`.
    pub response: Vec<u8>,
}

/// The hash both outputs agree on: session id, request ranges and response records, length-prefixed under
/// a domain tag.
pub fn transcript_hash(
    session_id: &[u8],
    ranges: &[RequestRange],
    records: &[RecordInfo],
) -> [u8; 32] {
    let mut buf = Vec::with_capacity(64 + 12 * ranges.len() + 16 * records.len());
    buf.extend_from_slice(b"tessera-tee/v1 transcript\0");
    buf.extend_from_slice(&(session_id.len() as u64).to_be_bytes());
    buf.extend_from_slice(session_id);
    buf.extend_from_slice(&(ranges.len() as u64).to_be_bytes());
    for r in ranges {
        buf.extend_from_slice(&r.start.to_be_bytes());
        buf.extend_from_slice(&r.length.to_be_bytes());
        buf.extend_from_slice(&r.r#type.to_be_bytes());
    }
    buf.extend_from_slice(&(records.len() as u64).to_be_bytes());
    for r in records {
        buf.extend_from_slice(&r.seq.to_be_bytes());
        buf.extend_from_slice(&r.content_type.to_be_bytes());
        buf.extend_from_slice(&r.length.to_be_bytes());
    }
    keccak256(&buf)
}

/// Decodes and verifies a bundle's protobuf bytes: at most [`crate::proof_file::MAX_BUNDLE_LEN`] of them,
/// with every repeated field bounded ([`crate::wire::limits::BUNDLE`]) before anything is decoded.
pub fn verify_bundle_bytes(
    bytes: &[u8],
    config: &VerifierConfig,
) -> Result<VerifiedProof, VerifyError> {
    use crate::wire::limits::{BUNDLE, LimitError, check};
    if bytes.len() > MAX_BUNDLE_LEN {
        return Err(VerifyError::TooLarge(bytes.len()));
    }
    match check(bytes, &BUNDLE) {
        Ok(()) => {}
        Err(LimitError::Malformed(_)) => return Err(VerifyError::Decode("bundle")),
        Err(e) => return Err(VerifyError::TooManyElements(e)),
    }
    let bundle = Bundle::decode(bytes).map_err(|_| VerifyError::Decode("bundle"))?;
    verify_bundle(&bundle, config)
}

/// Verifies a bundle; see the module documentation for every check.
pub fn verify_bundle(
    bundle: &Bundle,
    config: &VerifierConfig,
) -> Result<VerifiedProof, VerifyError> {
    if config.tee_k_signer == config.tee_t_signer {
        return Err(VerifyError::SameSigner);
    }
    let k_signed = check_signed(
        bundle.k_output.as_ref(),
        BodyType::KOutput,
        "K_OUTPUT",
        config.tee_k_signer,
    )?;
    let t_signed = check_signed(
        bundle.t_output.as_ref(),
        BodyType::TOutput,
        "T_OUTPUT",
        config.tee_t_signer,
    )?;
    let k =
        KOutput::decode(k_signed.body.as_slice()).map_err(|_| VerifyError::Decode("K_OUTPUT"))?;
    let t =
        TOutput::decode(t_signed.body.as_slice()).map_err(|_| VerifyError::Decode("T_OUTPUT"))?;

    // Binding.
    if k.session_id.len() != 16 {
        return Err(VerifyError::Binding("session id is not 16 bytes"));
    }
    if k.session_id != t.session_id {
        return Err(VerifyError::Binding("different session ids"));
    }
    if k.t_output_digest != keccak256(&t_signed.body) {
        return Err(VerifyError::Binding(
            "K_OUTPUT does not carry this T_OUTPUT's digest",
        ));
    }
    if t.transcript_hash != transcript_hash(&k.session_id, &k.request_ranges, &k.records) {
        return Err(VerifyError::Binding(
            "T_OUTPUT's transcript hash does not match K_OUTPUT",
        ));
    }

    check_time(k.timestamp_ms, t.timestamp_ms, config)?;
    if k.nonce != t.nonce || config.nonce.as_ref().is_some_and(|n| *n != k.nonce) {
        return Err(VerifyError::Nonce);
    }

    let content_len = check_records(&k, &t)?;
    let (ciphertext, keystream) = (&bundle.response_ciphertext, &bundle.response_keystream);
    let revealed_len = content_len - hidden_len(&k.response_ranges, content_len)?;
    if ciphertext.len() != revealed_len || keystream.len() != revealed_len {
        return Err(VerifyError::Records(
            "revealed ciphertext or keystream length differs from the records and hidden ranges",
        ));
    }
    if t.response_ciphertext_sha256 != sha256(ciphertext) {
        return Err(VerifyError::Binding(
            "the bundle's ciphertext is not the one T_OUTPUT signed",
        ));
    }
    if k.response_keystream_sha256 != sha256(keystream) {
        return Err(VerifyError::Binding(
            "the bundle's keystream is not the one K_OUTPUT signed",
        ));
    }

    let (request, proof_ranges) = reveal_request(&k, &t)?;
    let response = reveal_response(&k.response_ranges, content_len, ciphertext, keystream)?;
    Ok(VerifiedProof {
        session_id: k.session_id,
        hostname: k.hostname,
        port: k.port,
        cipher_suite: k.cipher_suite,
        tls_version: k.tls_version,
        certificate: k.certificate,
        timestamp_ms: k.timestamp_ms,
        request,
        proof_ranges,
        response,
    })
}

fn check_signed<'a>(
    signed: Option<&'a SignedMessage>,
    body_type: BodyType,
    output: &'static str,
    pinned: Address,
) -> Result<&'a SignedMessage, VerifyError> {
    let signed = signed
        .filter(|s| s.body_type == body_type as i32)
        .ok_or(VerifyError::Missing(output))?;
    let got = recover_signer(&signed.body, &signed.signature)
        .map_err(|source| VerifyError::Signature { output, source })?;
    if got != pinned {
        return Err(VerifyError::WrongSigner {
            output,
            expected: pinned,
            got,
        });
    }
    Ok(signed)
}

fn check_time(k_ms: u64, t_ms: u64, config: &VerifierConfig) -> Result<(), VerifyError> {
    for ts in [k_ms, t_ms] {
        if ts > config.now_ms.saturating_add(config.max_future_ms) {
            return Err(VerifyError::Time("an output is dated in the future"));
        }
        if ts < config.now_ms.saturating_sub(config.max_age_ms) {
            return Err(VerifyError::Time("an output is too old"));
        }
    }
    if k_ms.abs_diff(t_ms) > config.max_gap_ms {
        return Err(VerifyError::Time("the two outputs are too far apart"));
    }
    Ok(())
}

/// Checks the records and returns the total application-data length.
fn check_records(k: &KOutput, t: &TOutput) -> Result<usize, VerifyError> {
    if k.records != t.records {
        return Err(VerifyError::Records(
            "TEE_K and TEE_T signed different records",
        ));
    }
    let first_seq: u64 = match k.tls_version {
        0x0304 => 0,
        0x0303 => 1,
        _ => return Err(VerifyError::Records("unknown TLS version")),
    };
    let last = k.records.last().ok_or(VerifyError::Records("no records"))?;
    for (i, record) in k.records.iter().enumerate() {
        if Some(record.seq) != first_seq.checked_add(i as u64) {
            return Err(VerifyError::Records("sequence numbers are not contiguous"));
        }
        if !(20..=24).contains(&record.content_type) {
            return Err(VerifyError::Records("unknown content type"));
        }
        if record.content_type == ALERT && record.seq != last.seq {
            return Err(VerifyError::Records("an alert is not the last record"));
        }
    }
    match ResponseEnd::try_from(k.response_end) {
        Ok(ResponseEnd::CloseNotify) if last.content_type == ALERT && last.length == 2 => {}
        Ok(ResponseEnd::CloseNotify) => {
            return Err(VerifyError::Records(
                "close_notify claimed but the last record is no alert",
            ));
        }
        // Nothing signs this mode and no check of it is designed: accepting it would pass a response cut
        // short (no close_notify) on a signer's word alone.
        Ok(ResponseEnd::HttpComplete) => {
            return Err(VerifyError::Records(
                "http_complete as the end of the response is not supported (only close_notify is proven)",
            ));
        }
        _ => {
            return Err(VerifyError::Records(
                "the end of the response is not proven",
            ));
        }
    }
    k.records
        .iter()
        .filter(|r| r.content_type == APPLICATION_DATA)
        .try_fold(0usize, |acc, r| acc.checked_add(r.length as usize))
        .ok_or(VerifyError::Records("lengths overflow"))
}

fn reveal_request(k: &KOutput, t: &TOutput) -> Result<(Vec<u8>, Vec<RevealedRange>), VerifyError> {
    let mut request = k.redacted_request.clone();
    let mut end_of_previous = 0usize;
    let mut proofs = t.request_proof_streams.iter();
    let mut revealed = Vec::new();
    for range in &k.request_ranges {
        let start = range.start as usize;
        let end = start
            .checked_add(range.length as usize)
            .filter(|&e| e <= request.len() && range.length > 0)
            .ok_or(VerifyError::Ranges("request range out of bounds or empty"))?;
        if start < end_of_previous {
            return Err(VerifyError::Ranges(
                "request ranges overlap or are unsorted",
            ));
        }
        end_of_previous = end;
        match RangeType::try_from(range.r#type) {
            Ok(RangeType::Sensitive) => request[start..end].fill(b'*'),
            Ok(RangeType::SensitiveProof) => {
                let proof = proofs
                    .next()
                    .filter(|p| p.start == range.start && p.stream.len() == end - start)
                    .ok_or(VerifyError::Ranges(
                        "a sensitive_proof range has no matching proof stream",
                    ))?;
                request[start..end]
                    .iter_mut()
                    .zip(&proof.stream)
                    .for_each(|(b, s)| *b ^= s);
                revealed.push(RevealedRange {
                    start,
                    length: end - start,
                });
            }
            _ => return Err(VerifyError::Ranges("unknown request range type")),
        }
    }
    if proofs.next().is_some() {
        return Err(VerifyError::Ranges(
            "a proof stream without a sensitive_proof range",
        ));
    }
    Ok((request, revealed))
}
