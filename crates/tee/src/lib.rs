//! Attested HTTPS transcripts: TLS over relayed bytes and split AEAD between TEE_K and TEE_T.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certinfo;
pub mod content;
pub mod error;
pub mod nonce;
pub mod record;
pub mod record_layer;
pub mod split;
pub mod suite;
pub mod tls_client;

pub use certinfo::CertificateInfo;
pub use content::{Alert, HandshakeMessage, RecordContent};
pub use error::{Result, TeeError};
pub use record::{ContentType, Record, RecordHeader, RecordSplitter};
pub use record_layer::{
    IncomingSecrets, OutgoingRecord, ProtectedPayload, TeeKReader, TeeKWriter, open_via_split,
    seal_via_split,
};
pub use split::{Keystream, Tag, TagSecrets, TeeKKeys, compute_tag, verify_tag};
pub use suite::{AeadAlgorithm, CipherSuite, TlsVersion};
pub use tls_client::{ConnectRequest, EstablishedSession, RelayedTlsClient, RootStore};
