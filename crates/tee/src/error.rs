//! The error vocabulary of the TEE crypto core.

use thiserror::Error;

/// Everything that can go wrong in the TLS client, the record layer or the split AEAD.
///
/// No variant carries key material. Input from the network or a file never panics: it ends up here.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TeeError {
    /// A record header announced more bytes than the protocol allows.
    #[error("TLS record too large: {len} bytes of payload, the limit is {max}")]
    RecordTooLarge {
        /// Announced payload length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// Bytes that are not a well-formed TLS record (or inner plaintext).
    #[error("malformed TLS record: {0}")]
    MalformedRecord(&'static str),
    /// The AEAD tag did not verify: the record was tampered with, or the wrong key, AAD or sequence number was used.
    #[error("record authentication failed: the AEAD tag does not match")]
    BadTag,
    /// The 64-bit record sequence number would wrap; the connection must end.
    #[error("record sequence number exhausted; the connection must be closed")]
    SequenceExhausted,
    /// The server sent a TLS 1.3 KeyUpdate after the keys were extracted from rustls. The extracted secrets are
    /// key and IV only (no traffic secret), so the next generation cannot be derived: the session fails closed.
    #[error(
        "the server sent a TLS 1.3 KeyUpdate; key updates after key extraction are not supported"
    )]
    KeyUpdateUnsupported,
    /// A record that is valid TLS but not allowed at this point (e.g. a plaintext record after the handshake).
    #[error("unexpected record: {0}")]
    UnexpectedRecord(&'static str),
    /// A key, IV or tag secret of the wrong length.
    #[error("wrong length for {what}: expected {expected} bytes, got {got}")]
    KeyLength {
        /// Which value.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// Two buffers that must be equally long are not (e.g. a keystream and the ciphertext it is for).
    #[error("length mismatch for {what}: expected {expected} bytes, got {got}")]
    LengthMismatch {
        /// Which value.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A cipher suite, version or AEAD outside the nine supported suites.
    #[error("unsupported TLS parameters: {0}")]
    Unsupported(String),
    /// The request's forced version and forced suite contradict each other, or the hostname is invalid.
    #[error("invalid connect request: {0}")]
    InvalidRequest(String),
    /// rustls reported an error (handshake failure, certificate rejected, ...).
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
    /// Loading a root store failed.
    #[error("root store: {0}")]
    RootStore(String),
    /// A certificate could not be parsed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// An operation needs a completed handshake.
    #[error("the TLS handshake is not complete")]
    HandshakeIncomplete,
    /// I/O while moving bytes in or out of rustls, or reading a file.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias of this crate.
pub type Result<T, E = TeeError> = std::result::Result<T, E>;
