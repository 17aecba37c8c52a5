//! The proof file `tessera prove -o proof.json` writes and `tessera verify` reads.
//!
//! A small JSON document around the exact protobuf bytes of the [`Bundle`], so the signed bodies travel
//! byte for byte (re-encoding a protobuf message is not guaranteed to give the signed bytes back):
//!
//! ```json
//! {"format": "tessera-tee-proof/v3", "bundle": "<standard base64 of the Bundle protobuf>"}
//! ```
//!
//! Version 3 carries the ciphertext and the keystream of the revealed response bytes only. Older files are
//! refused with a clear error: version 1 carried the whole keystream with zeros at hidden positions,
//! version 2 the whole ciphertext (and T_OUTPUT signed the whole ciphertext's digest).
//!
//! Nothing else in the file is trusted: whatever a verifier shows comes from [`crate::verify`]'s checks of
//! the signed bodies inside `bundle`. Unknown members are ignored, so a writer may add informational ones.

use crate::proto::Bundle;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The `format` value this version writes and reads.
pub const FORMAT: &str = "tessera-tee-proof/v3";

/// Largest proof file accepted: room for the largest response a prover collects
/// ([`crate::service::client::MAX_RESPONSE`]) twice — the bundle carries its ciphertext and its keystream —
/// in base64 (a third more), plus the request, the signed outputs and the certificates.
pub const MAX_PROOF_FILE_LEN: usize = 3 * crate::service::client::MAX_RESPONSE + (16 << 20);

/// Largest `Bundle` protobuf accepted ([`crate::verify::verify_bundle_bytes`] too): what the base64 of the
/// largest proof file decodes to.
pub const MAX_BUNDLE_LEN: usize = MAX_PROOF_FILE_LEN / 4 * 3;

// Every proof the prover can make, the verifier can read.
const _: () = assert!(
    MAX_PROOF_FILE_LEN >= 4 * (2 * crate::service::client::MAX_RESPONSE + (8 << 20)).div_ceil(3)
);

/// Why a proof file could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProofFileError {
    /// Larger than [`MAX_PROOF_FILE_LEN`].
    #[error("proof file is {0} bytes, the limit is {MAX_PROOF_FILE_LEN}")]
    TooLarge(usize),
    /// Not the JSON document described above.
    #[error("proof file is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    /// A `format` other than [`FORMAT`] (versions 1 and 2 come from earlier Tesseras).
    #[error(
        "unsupported proof format {0:?} (expected {FORMAT:?}; make the proof again with this version)"
    )]
    Format(String),
    /// `bundle` is not base64.
    #[error("bundle is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// `bundle` is not a protobuf `Bundle`.
    #[error("bundle is not a valid protobuf Bundle")]
    Protobuf,
    /// A repeated field of the bundle holds more elements than [`crate::wire::limits`] allows (checked
    /// before decoding: prost bounds none, and millions of empty entries would decode into gigabytes).
    #[error("bundle refused: {0}")]
    TooManyElements(crate::wire::limits::LimitError),
}

#[derive(Serialize, Deserialize)]
struct Document {
    format: String,
    bundle: String,
}

/// Serializes a bundle into the proof file's JSON text.
pub fn to_json(bundle: &Bundle) -> String {
    let document = Document {
        format: FORMAT.to_owned(),
        bundle: STANDARD.encode(bundle.encode_to_vec()),
    };
    // A struct of two strings always serializes.
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

/// Parses a proof file's bytes; every malformed input is an error, never a panic.
pub fn from_json(bytes: &[u8]) -> Result<Bundle, ProofFileError> {
    if bytes.len() > MAX_PROOF_FILE_LEN {
        return Err(ProofFileError::TooLarge(bytes.len()));
    }
    let document: Document = serde_json::from_slice(bytes)?;
    if document.format != FORMAT {
        return Err(ProofFileError::Format(document.format));
    }
    let raw = STANDARD.decode(document.bundle.as_bytes())?;
    decode_bundle(&raw)
}

/// Decodes a `Bundle`'s protobuf bytes once [`crate::wire::limits::BUNDLE`] bounded its repeated fields.
fn decode_bundle(raw: &[u8]) -> Result<Bundle, ProofFileError> {
    use crate::wire::limits::{BUNDLE, LimitError, check};
    match check(raw, &BUNDLE) {
        Ok(()) => {}
        Err(LimitError::Malformed(_)) => return Err(ProofFileError::Protobuf),
        Err(e) => return Err(ProofFileError::TooManyElements(e)),
    }
    Bundle::decode(raw).map_err(|_| ProofFileError::Protobuf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{BodyType, SignedMessage};

    #[test]
    fn round_trip_keeps_signed_bytes() {
        let bundle = Bundle {
            k_output: Some(SignedMessage {
                body_type: BodyType::KOutput as i32,
                body: vec![1, 2, 3],
                signature: vec![9; 65],
            }),
            t_output: None,
            attestations: Vec::new(),
            response_ciphertext: vec![4, 5],
            response_keystream: vec![6, 7],
        };
        let text = to_json(&bundle);
        assert_eq!(from_json(text.as_bytes()).expect("parses"), bundle);
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(matches!(
            from_json(b"not json"),
            Err(ProofFileError::Json(_))
        ));
        assert!(matches!(
            from_json(br#"{"format":"other","bundle":""}"#),
            Err(ProofFileError::Format(_))
        ));
        assert!(matches!(
            from_json(format!(r#"{{"format":"{FORMAT}","bundle":"@@"}}"#).as_bytes()),
            Err(ProofFileError::Base64(_))
        ));
        assert!(matches!(
            from_json(format!(r#"{{"format":"{FORMAT}","bundle":"/w=="}}"#).as_bytes()),
            Err(ProofFileError::Protobuf)
        ));
    }

    #[test]
    fn a_bundle_of_millions_of_empty_attestations_is_refused_before_decoding() {
        // 1 M empty attestations (2 bytes each, ~56 MB decoded); 156 MiB of them would be ~10 GB.
        let bundle = [0x1a, 0x00].repeat(1_000_000);
        let text = format!(
            r#"{{"format":"{FORMAT}","bundle":"{}"}}"#,
            STANDARD.encode(&bundle)
        );
        let refused = from_json(text.as_bytes()).err().map(|e| e.to_string());
        assert_eq!(
            refused.as_deref(),
            Some("bundle refused: Bundle.attestations holds more than 8 elements")
        );
        // A few attestations are fine.
        let few = Bundle {
            attestations: vec![Default::default(); crate::wire::limits::MAX_ATTESTATIONS],
            ..Default::default()
        };
        assert_eq!(from_json(to_json(&few).as_bytes()).expect("parses"), few);
    }
}
