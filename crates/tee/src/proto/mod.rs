//! The wire format: prost types of `crates/tee/proto/tee.proto`, written by hand (no protoc at build time).
//!
//! Every message of a session travels in one [`Envelope`] carrying the session id; the numbered comments are
//! the steps of the message flow in `docs/tee-protocol.md`. Messages holding tag secrets, keystreams or
//! redaction streams print only lengths through `Debug`.

mod output;

pub use output::{
    AttestationDocument, BodyType, Bundle, CertificateInfo, KOutput, ProofStream, RecordInfo,
    ResponseEnd, ResponseRange, SignedMessage, TOutput,
};

use std::fmt;

/// One message on a channel.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// 16-byte session id, made by TEE_K.
    #[prost(bytes = "vec", tag = "1")]
    pub session_id: Vec<u8>,
    /// The message.
    #[prost(
        oneof = "Body",
        tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31"
    )]
    pub body: Option<Body>,
}

/// The message an [`Envelope`] carries.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    /// 1. K→T.
    #[prost(message, tag = "10")]
    SessionCreated(SessionCreated),
    /// 1. K→C.
    #[prost(message, tag = "11")]
    SessionReady(SessionReady),
    /// 2. C→K.
    #[prost(message, tag = "12")]
    RequestConnection(RequestConnection),
    /// 2. K→C.
    #[prost(message, tag = "13")]
    ConnectionReady(ConnectionReady),
    /// 3. C→K.
    #[prost(message, tag = "14")]
    TcpReady(TcpReady),
    /// 4. K↔C.
    #[prost(message, tag = "15")]
    TcpData(TcpData),
    /// 5. K→C.
    #[prost(message, tag = "16")]
    HandshakeComplete(HandshakeComplete),
    /// 6. C→K.
    #[prost(message, tag = "17")]
    RedactedRequest(RedactedRequest),
    /// 6. C→T.
    #[prost(message, tag = "18")]
    RedactionStreams(RedactionStreams),
    /// 7. K→T.
    #[prost(message, tag = "19")]
    EncryptedRequest(EncryptedRequest),
    /// 7. T→C.
    #[prost(message, tag = "20")]
    EncryptedData(EncryptedData),
    /// 8. C→T.
    #[prost(message, tag = "21")]
    BatchedEncryptedResponses(BatchedEncryptedResponses),
    /// 9. T→K.
    #[prost(message, tag = "22")]
    BatchedResponseLengths(BatchedResponseLengths),
    /// 9. K→T.
    #[prost(message, tag = "23")]
    BatchedTagSecrets(BatchedTagSecrets),
    /// 9. T→K.
    #[prost(message, tag = "24")]
    BatchedTagVerifications(BatchedTagVerifications),
    /// 10. K→C.
    #[prost(message, tag = "25")]
    BatchedDecryptionStreams(BatchedDecryptionStreams),
    /// 11. C→K.
    #[prost(message, tag = "26")]
    ResponseRedactionSpec(ResponseRedactionSpec),
    /// 12. K→T, accepted only on the TEE_K channel.
    #[prost(message, tag = "27")]
    Finished(Finished),
    /// 12. T→K.
    #[prost(message, tag = "28")]
    TOutputDigest(TOutputDigest),
    /// 12. K→C and T→C.
    #[prost(message, tag = "29")]
    SignedMessage(SignedMessage),
    /// Any direction; ends the session.
    #[prost(message, tag = "30")]
    Error(Error),
    /// 1. C→K: the next session on channels a finished session leaves open.
    #[prost(message, tag = "31")]
    NewSession(NewSession),
}

/// 1. K→T: a new session; TEE_T echoes it back once the session is registered.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct SessionCreated {}

/// 1. K→C: the session id is in the envelope.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct SessionReady {}

/// Step 1 again, C→K, after a session ended with both signed outputs: the next session on the same
/// channels (TEE_K answers `session_ready` with its id). The envelope carries the ended session's id.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct NewSession {}

/// 2. C→K: where to connect and how.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RequestConnection {
    /// Server name.
    #[prost(string, tag = "1")]
    pub hostname: String,
    /// Server port.
    #[prost(uint32, tag = "2")]
    pub port: u32,
    /// SNI ("" = hostname).
    #[prost(string, tag = "3")]
    pub sni: String,
    /// ALPN protocols.
    #[prost(string, repeated, tag = "4")]
    pub alpn: Vec<String>,
    /// "", "1.2" or "1.3".
    #[prost(string, tag = "5")]
    pub force_tls_version: String,
    /// "" or an IANA suite name.
    #[prost(string, tag = "6")]
    pub force_cipher_suite: String,
    /// The verifier's nonce, signed into both outputs.
    #[prost(bytes = "vec", tag = "7")]
    pub nonce: Vec<u8>,
}

/// 2. K→C.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ConnectionReady {}

/// 3. C→K: the TCP connection is open.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct TcpReady {}

/// 4. Handshake bytes: K→C to write to TCP, C→K one whole TLS record read from TCP.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TcpData {
    /// The bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

/// 5. K→C: the handshake is done.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HandshakeComplete {
    /// IANA code.
    #[prost(uint32, tag = "1")]
    pub cipher_suite: u32,
    /// 0x0303 or 0x0304.
    #[prost(uint32, tag = "2")]
    pub tls_version: u32,
    /// TEE_K's last handshake bytes (TLS 1.3: the client Finished): the client writes them to TCP and from
    /// then on keeps every server record for TEE_T.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// Kind of a hidden request range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum RangeType {
    /// Not set: rejected.
    Unspecified = 0,
    /// Hidden forever.
    Sensitive = 1,
    /// Hidden from TEE_K, revealed to the verifier through TEE_T's signed output.
    SensitiveProof = 2,
}

/// A hidden request range.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct RequestRange {
    /// First byte.
    #[prost(uint32, tag = "1")]
    pub start: u32,
    /// Length.
    #[prost(uint32, tag = "2")]
    pub length: u32,
    /// [`RangeType`].
    #[prost(enumeration = "RangeType", tag = "3")]
    pub r#type: i32,
}

/// 6. C→K: the request with hidden ranges masked.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RedactedRequest {
    /// The masked request.
    #[prost(bytes = "vec", tag = "1")]
    pub redacted: Vec<u8>,
    /// HMAC-SHA256(key, stream), one per range.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub commitments: Vec<Vec<u8>>,
    /// The hidden ranges.
    #[prost(message, repeated, tag = "3")]
    pub ranges: Vec<RequestRange>,
}

/// 6. C→T: the masking streams and commitment keys.
#[derive(Clone, PartialEq, Eq, prost::Message)]
#[prost(skip_debug)]
pub struct RedactionStreams {
    /// One stream per range.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub streams: Vec<Vec<u8>>,
    /// One 32-byte key per range.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub commitment_keys: Vec<Vec<u8>>,
}

/// 7. K→T: the redacted request encrypted, with what TEE_T needs to fix it up and tag it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
#[prost(skip_debug)]
pub struct EncryptedRequest {
    /// Ciphertext of the redacted request.
    #[prost(bytes = "vec", tag = "1")]
    pub ciphertext: Vec<u8>,
    /// Tag secrets of the record.
    #[prost(bytes = "vec", tag = "2")]
    pub tag_secrets: Vec<u8>,
    /// The client's commitments.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub commitments: Vec<Vec<u8>>,
    /// IANA code.
    #[prost(uint32, tag = "4")]
    pub cipher_suite: u32,
    /// Record sequence number.
    #[prost(uint64, tag = "5")]
    pub seq: u64,
    /// Hidden ranges.
    #[prost(message, repeated, tag = "6")]
    pub ranges: Vec<RequestRange>,
    /// The record's AAD.
    #[prost(bytes = "vec", tag = "7")]
    pub aad: Vec<u8>,
    /// The redacted bytes of each hidden range, so TEE_T can check the plaintext for CR/LF
    /// ([`crate::redaction::check_streams`]).
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub masked_ranges: Vec<Vec<u8>>,
    /// TLS 1.2 AES-GCM: the record's explicit nonce.
    #[prost(bytes = "vec", tag = "9")]
    pub explicit_iv: Vec<u8>,
    /// Per range, set by TEE_K: a query parameter value in the request line, checked by the stricter rule
    /// of [`crate::redaction::check_streams_in`].
    #[prost(bool, repeated, tag = "10")]
    pub in_target: Vec<bool>,
}

/// 7. T→C: the real request ciphertext and its tag.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EncryptedData {
    /// Ciphertext.
    #[prost(bytes = "vec", tag = "1")]
    pub ciphertext: Vec<u8>,
    /// AEAD tag.
    #[prost(bytes = "vec", tag = "2")]
    pub tag: Vec<u8>,
    /// TLS 1.2 AES-GCM: the explicit nonce, which goes before the ciphertext in the record.
    #[prost(bytes = "vec", tag = "3")]
    pub explicit_iv: Vec<u8>,
}

/// One server record as the client read it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EncryptedResponse {
    /// Ciphertext without explicit nonce and tag. `Bytes`: decoded from a received message without a
    /// copy (a response's bulk crosses here), and shared with the client's own copy without one.
    #[prost(bytes = "bytes", tag = "1")]
    pub ciphertext: bytes::Bytes,
    /// AEAD tag.
    #[prost(bytes = "vec", tag = "2")]
    pub tag: Vec<u8>,
    /// The 5-byte record header.
    #[prost(bytes = "vec", tag = "3")]
    pub header: Vec<u8>,
    /// Sequence number.
    #[prost(uint64, tag = "4")]
    pub seq: u64,
    /// TLS 1.2 AES-GCM explicit nonce.
    #[prost(bytes = "vec", tag = "5")]
    pub explicit_iv: Vec<u8>,
}

/// 8. C→T: server records.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct BatchedEncryptedResponses {
    /// The records.
    #[prost(message, repeated, tag = "1")]
    pub responses: Vec<EncryptedResponse>,
    /// TCP EOF reached: the last batch.
    #[prost(bool, tag = "2")]
    pub eof: bool,
}

/// Length and header of one record (what TEE_K may see of the response).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ResponseLength {
    /// Sequence number.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// Ciphertext length.
    #[prost(uint32, tag = "2")]
    pub length: u32,
    /// The 5-byte record header.
    #[prost(bytes = "vec", tag = "3")]
    pub header: Vec<u8>,
    /// TLS 1.2 AES-GCM explicit nonce.
    #[prost(bytes = "vec", tag = "4")]
    pub explicit_iv: Vec<u8>,
}

/// 9. T→K.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct BatchedResponseLengths {
    /// One per record.
    #[prost(message, repeated, tag = "1")]
    pub lengths: Vec<ResponseLength>,
}

/// Tag secrets of one response record.
#[derive(Clone, PartialEq, Eq, prost::Message)]
#[prost(skip_debug)]
pub struct RecordTagSecrets {
    /// Sequence number.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// 32 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub tag_secrets: Vec<u8>,
    /// TLS 1.3: keystream of the record's tail (inner type and padding).
    #[prost(bytes = "vec", tag = "3")]
    pub tail_keystream: Vec<u8>,
}

/// 9. K→T.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct BatchedTagSecrets {
    /// One per record.
    #[prost(message, repeated, tag = "1")]
    pub secrets: Vec<RecordTagSecrets>,
}

/// TEE_T's verdict on one record.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct TagVerification {
    /// Sequence number.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// Tag verified.
    #[prost(bool, tag = "2")]
    pub verified: bool,
    /// Content type established by TEE_T.
    #[prost(uint32, tag = "3")]
    pub content_type: u32,
}

/// 9. T→K.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct BatchedTagVerifications {
    /// One per record.
    #[prost(message, repeated, tag = "1")]
    pub verifications: Vec<TagVerification>,
}

/// Keystream of one response record.
#[derive(Clone, PartialEq, Eq, prost::Message)]
#[prost(skip_debug)]
pub struct DecryptionStream {
    /// Sequence number.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// The keystream.
    #[prost(bytes = "vec", tag = "2")]
    pub keystream: Vec<u8>,
}

/// 10. K→C, only after every tag verified.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct BatchedDecryptionStreams {
    /// One per record.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<DecryptionStream>,
    /// A verified close_notify ended the response: the client stops reading (a server may keep TCP open
    /// after it) and sends its last batch.
    #[prost(bool, tag = "2")]
    pub closed: bool,
}

/// 11. C→K: what stays hidden in the signed output.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ResponseRedactionSpec {
    /// Hidden ranges of the consolidated response.
    #[prost(message, repeated, tag = "1")]
    pub hidden: Vec<ResponseRange>,
}

/// 12. K→T: sign T_OUTPUT now.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Finished {
    /// The verifier's nonce (from `request_connection`), signed into T_OUTPUT.
    #[prost(bytes = "vec", tag = "1")]
    pub nonce: Vec<u8>,
    /// The hidden response ranges K_OUTPUT signs (checked by TEE_K): T_OUTPUT hashes the ciphertext
    /// outside them.
    #[prost(message, repeated, tag = "2")]
    pub response_ranges: Vec<ResponseRange>,
}

/// 12. T→K: Keccak-256 of T_OUTPUT's body, signed into K_OUTPUT.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TOutputDigest {
    /// 32 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub digest: Vec<u8>,
}

/// Ends the session, with the reason.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Error {
    /// Why.
    #[prost(string, tag = "1")]
    pub reason: String,
}

macro_rules! redacted_debug {
    ($ty:ident { $($field:ident),* } secret { $($secret:ident),* }) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    $(.field(stringify!($secret), &format_args!("<redacted, len {}>", self.$secret.len())))*
                    .finish()
            }
        }
    };
}

redacted_debug!(RedactionStreams {} secret { streams, commitment_keys });
redacted_debug!(EncryptedRequest { ciphertext, commitments, cipher_suite, seq, ranges, aad, masked_ranges, explicit_iv, in_target } secret { tag_secrets });
redacted_debug!(RecordTagSecrets { seq } secret { tag_secrets, tail_keystream });
redacted_debug!(DecryptionStream { seq } secret { keystream });
