//! # tessera-tee
//!
//! Attested HTTPS transcripts: TLS over relayed bytes and split AEAD between TEE_K and TEE_T.
//!
//! TEE_K runs the TLS handshake in rustls over bytes the client relays ([`RelayedTlsClient`]), extracts the
//! traffic keys, and from then on every record goes through the split AEAD: TEE_K produces keystreams and tag
//! secrets ([`TeeKKeys`], [`TeeKWriter`], [`TeeKReader`]), TEE_T makes and checks tags from tag secrets alone
//! ([`compute_tag`], [`verify_tag`]). The composition equals AES-GCM / ChaCha20-Poly1305 byte for byte for all
//! nine TLS 1.2 and 1.3 AEAD suites ([`CipherSuite`]). Formats: `docs/tee-split-aead.md`.
//!
//! | module | protocol concept |
//! |---|---|
//! | [`record`] | record framing, the [`RecordSplitter`] (TCP chunks → whole records, size limit) |
//! | [`nonce`] | per-record nonces and AADs, TLS 1.2 and 1.3 |
//! | [`split`] | TEE_K's keystreams and tag secrets; TEE_T's GHASH / Poly1305 tags |
//! | [`record_layer`] | the two traffic directions with sequence numbers; one record through the split path |
//! | [`content`] | TLS 1.3 inner content type and padding; post-handshake messages and alerts |
//! | [`tls_client`] | rustls over relayed bytes, root store, forced version/suite, SNI, ALPN |
//! | [`key_update`] | TLS 1.3 traffic secrets and KeyUpdate generations |
//! | [`certinfo`] | subject/issuer CN, validity, DNS names |
//! | [`proto`] | the session messages and signed outputs of `proto/tee.proto` (prost) |
//! | [`wire`] | the envelope codec: size limit, session id, unknown message |
//! | [`redaction`] | redacted request: masks and commitments, TEE_K's and TEE_T's checks |
//! | [`signing`] | K_OUTPUT / T_OUTPUT signatures (secp256k1, EIP-191), signer addresses |
//! | [`verify`] | the offline verifier against pinned signers |
//! | [`proof_file`] | the proof file (`proof.json`): the bundle's exact bytes in JSON |
//!
//! The session protocol and the verifier: `docs/tee-protocol.md`.
//!
//! ```no_run
//! # fn relay(_: &[u8]) -> Vec<u8> { Vec::new() }
//! use tessera_tee::{ConnectRequest, RelayedTlsClient, RootStore, open_via_split, seal_via_split};
//! use tessera_tee::record::ContentType;
//! # fn main() -> tessera_tee::Result<()> {
//! let mut client = RelayedTlsClient::new(&ConnectRequest::new("example.com"), &RootStore::webpki())?;
//! while !client.is_handshake_complete() {
//!     let from_server = relay(&client.take_outgoing()?); // the client carries the bytes
//!     client.feed(&from_server)?;
//! }
//! relay(&client.take_outgoing()?); // the client Finished
//! let mut session = client.finish()?;
//! let request = b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n";
//! let record = seal_via_split(&mut session.writer, ContentType::ApplicationData, request)?;
//! for record in session.splitter.push(&relay(&record.to_bytes()))? {
//!     let content = open_via_split(&mut session.reader, &record)?;
//!     println!("{content:?}");
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certinfo;
pub mod content;
pub mod error;
pub mod key_update;
pub mod nonce;
pub mod proof_file;
pub mod proto;
pub mod record;
pub mod record_layer;
pub mod redaction;
pub mod service;
pub mod signing;
pub mod split;
pub mod suite;
pub mod tls_client;
pub mod verify;
pub mod wire;

pub use certinfo::CertificateInfo;
pub use content::{Alert, HandshakeMessage, RecordContent};
pub use error::{Result, TeeError};
pub use record::{ContentType, Record, RecordHeader, RecordSplitter};
pub use record_layer::{
    IncomingSecrets, OutgoingRecord, ProtectedPayload, TeeKReader, TeeKWriter, open_via_split,
    seal_key_update_via_split, seal_via_split,
};
pub use split::{Keystream, Tag, TagSecrets, TeeKKeys, compute_tag, verify_tag};
pub use suite::{AeadAlgorithm, CipherSuite, TlsVersion};
pub use tls_client::{ConnectRequest, EstablishedSession, RelayedTlsClient, RootStore};
