//! The signed outputs (K_OUTPUT, T_OUTPUT), their envelope [`SignedMessage`] and the [`Bundle`] a verifier
//! checks. Field for field as in `proto/tee.proto`.

use super::RequestRange;

/// Which signed body a [`SignedMessage`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum BodyType {
    /// Not set: always rejected.
    Unspecified = 0,
    /// [`KOutput`], signed by TEE_K.
    KOutput = 1,
    /// [`TOutput`], signed by TEE_T.
    TOutput = 2,
}

/// A signed body: 65-byte R‖S‖V secp256k1 signature over the EIP-191 hash of `body`'s exact bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignedMessage {
    /// [`BodyType`].
    #[prost(enumeration = "BodyType", tag = "1")]
    pub body_type: i32,
    /// The encoded [`KOutput`] or [`TOutput`].
    #[prost(bytes = "vec", tag = "2")]
    pub body: Vec<u8>,
    /// R‖S‖V, V ∈ {0, 1}.
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
}

/// One response record as both TEEs saw it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RecordInfo {
    /// TLS sequence number.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// The real content type (TLS 1.3: the inner type).
    #[prost(uint32, tag = "2")]
    pub content_type: u32,
    /// Content bytes.
    #[prost(uint32, tag = "3")]
    pub length: u32,
}

/// How the end of the response is proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ResponseEnd {
    /// Not proven: rejected by the verifier.
    Unspecified = 0,
    /// The last record is a verified close_notify alert.
    CloseNotify = 1,
    /// The application data is a complete HTTP message. Not designed: nothing signs it and the verifier
    /// refuses it.
    HttpComplete = 2,
}

/// A hidden byte range of the response.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ResponseRange {
    /// First byte.
    #[prost(uint64, tag = "1")]
    pub start: u64,
    /// Length.
    #[prost(uint64, tag = "2")]
    pub length: u64,
}

/// The server certificate as TEE_K validated it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CertificateInfo {
    /// Subject common name ("" if none).
    #[prost(string, tag = "1")]
    pub subject_cn: String,
    /// Issuer common name ("" if none).
    #[prost(string, tag = "2")]
    pub issuer_cn: String,
    /// Start of validity, Unix seconds.
    #[prost(int64, tag = "3")]
    pub not_before: i64,
    /// End of validity, Unix seconds.
    #[prost(int64, tag = "4")]
    pub not_after: i64,
    /// Subject alternative DNS names.
    #[prost(string, repeated, tag = "5")]
    pub dns_names: Vec<String>,
}

/// TEE_K's signed output.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KOutput {
    /// 16-byte session id.
    #[prost(bytes = "vec", tag = "1")]
    pub session_id: Vec<u8>,
    /// Signing time, Unix milliseconds.
    #[prost(uint64, tag = "2")]
    pub timestamp_ms: u64,
    /// The verifier's nonce (empty if none).
    #[prost(bytes = "vec", tag = "3")]
    pub nonce: Vec<u8>,
    /// The server name.
    #[prost(string, tag = "4")]
    pub hostname: String,
    /// The server port.
    #[prost(uint32, tag = "5")]
    pub port: u32,
    /// IANA cipher suite code.
    #[prost(uint32, tag = "6")]
    pub cipher_suite: u32,
    /// 0x0303 or 0x0304.
    #[prost(uint32, tag = "7")]
    pub tls_version: u32,
    /// The request as TEE_K saw it: hidden ranges hold stream-masked bytes.
    #[prost(bytes = "vec", tag = "8")]
    pub redacted_request: Vec<u8>,
    /// Hidden request ranges.
    #[prost(message, repeated, tag = "9")]
    pub request_ranges: Vec<RequestRange>,
    /// SHA-256 of the keystream of the revealed application-data bytes (the consolidated keystream with the
    /// hidden response ranges cut out, in order). Those bytes travel in the [`Bundle`] (the client already
    /// holds them), so the signed body stays small; the keystream of hidden bytes stays with TEE_K and the
    /// client.
    #[prost(bytes = "vec", tag = "10")]
    pub response_keystream_sha256: Vec<u8>,
    /// Hidden response ranges.
    #[prost(message, repeated, tag = "11")]
    pub response_ranges: Vec<ResponseRange>,
    /// The server certificate.
    #[prost(message, optional, tag = "12")]
    pub certificate: Option<CertificateInfo>,
    /// Every response record, contiguous in `seq`.
    #[prost(message, repeated, tag = "13")]
    pub records: Vec<RecordInfo>,
    /// [`ResponseEnd`].
    #[prost(enumeration = "ResponseEnd", tag = "14")]
    pub response_end: i32,
    /// Keccak-256 of the T_OUTPUT body this output belongs to.
    #[prost(bytes = "vec", tag = "15")]
    pub t_output_digest: Vec<u8>,
}

/// Request proof stream for one `SENSITIVE_PROOF` range.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProofStream {
    /// Start of the range in the request.
    #[prost(uint32, tag = "1")]
    pub start: u32,
    /// The stream the client XORed into the range.
    #[prost(bytes = "vec", tag = "2")]
    pub stream: Vec<u8>,
}

/// TEE_T's signed output.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TOutput {
    /// 16-byte session id.
    #[prost(bytes = "vec", tag = "1")]
    pub session_id: Vec<u8>,
    /// Signing time, Unix milliseconds.
    #[prost(uint64, tag = "2")]
    pub timestamp_ms: u64,
    /// The verifier's nonce (empty if none).
    #[prost(bytes = "vec", tag = "3")]
    pub nonce: Vec<u8>,
    /// SHA-256 of the ciphertext of the revealed application-data bytes (the hidden response ranges cut
    /// out), which travels in the [`Bundle`].
    #[prost(bytes = "vec", tag = "4")]
    pub response_ciphertext_sha256: Vec<u8>,
    /// One per `SENSITIVE_PROOF` request range.
    #[prost(message, repeated, tag = "5")]
    pub request_proof_streams: Vec<ProofStream>,
    /// Every response record, contiguous in `seq`.
    #[prost(message, repeated, tag = "6")]
    pub records: Vec<RecordInfo>,
    /// [`crate::verify::transcript_hash`] of session id, request ranges and records.
    #[prost(bytes = "vec", tag = "7")]
    pub transcript_hash: Vec<u8>,
}

/// An attestation document binding a signer (Nitro, GCP). `standalone` has none.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttestationDocument {
    /// Which output's signer it attests.
    #[prost(enumeration = "BodyType", tag = "1")]
    pub role: i32,
    /// "nitro", "gcp".
    #[prost(string, tag = "2")]
    pub kind: String,
    /// The document.
    #[prost(bytes = "vec", tag = "3")]
    pub document: Vec<u8>,
}

/// What the client writes and a verifier reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Bundle {
    /// Signed [`KOutput`].
    #[prost(message, optional, tag = "1")]
    pub k_output: Option<SignedMessage>,
    /// Signed [`TOutput`].
    #[prost(message, optional, tag = "2")]
    pub t_output: Option<SignedMessage>,
    /// Attestation documents.
    #[prost(message, repeated, tag = "3")]
    pub attestations: Vec<AttestationDocument>,
    /// The ciphertext of the revealed application-data bytes only (T_OUTPUT signs its SHA-256).
    #[prost(bytes = "vec", tag = "4")]
    pub response_ciphertext: Vec<u8>,
    /// The keystream of the revealed application-data bytes only (K_OUTPUT signs its SHA-256).
    #[prost(bytes = "vec", tag = "5")]
    pub response_keystream: Vec<u8>,
}
