//! Signed outputs: secp256k1 recoverable ECDSA over the EIP-191 hash of a body's exact protobuf bytes.
//!
//! A signature is 65 bytes `R ‖ S ‖ V` with `V ∈ {0, 1}`. The signer's [`Address`] (Ethereum style: the last
//! 20 bytes of Keccak-256 of the uncompressed public key) is *recovered* from the signature and compared with
//! an address the verifier pinned; no address travels in a bundle (reference gap: self-declared signers).
//!
//! The two outputs are bound both ways: TEE_T signs first and puts [`crate::verify::transcript_hash`] (session
//! id, request ranges, records) into T_OUTPUT; TEE_K then puts the Keccak-256 of T_OUTPUT's body into K_OUTPUT.

use crate::proto::{BodyType, KOutput, SignedMessage, TOutput};
use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use prost::Message;
use sha3::{Digest, Keccak256};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;
use zeroize::Zeroize;

/// Length of a signature: R ‖ S ‖ V.
pub const SIGNATURE_LEN: usize = 65;

/// Errors of signing and signature recovery.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// Not 65 bytes, V not 0 or 1, or R/S out of range.
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    /// No public key recovers from this signature and hash.
    #[error("no signer can be recovered from the signature")]
    Unrecoverable,
    /// A secret key that is not a valid secp256k1 scalar.
    #[error("invalid secp256k1 secret key")]
    InvalidKey,
    /// An address that is not `0x` and 40 hex digits.
    #[error("invalid signer address {0:?}: expected 0x and 40 hex digits")]
    InvalidAddress(String),
}

/// Keccak-256.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// SHA-256: the digest the signed outputs carry of the bulk response bytes (ciphertext, keystream), which
/// travel beside them in the bundle. Fast where Keccak is not (SHA extensions), so the signed bodies stay small
/// and cheap to hash whatever the response size.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// The EIP-191 (`personal_sign`) hash: `Keccak-256("\x19Ethereum Signed Message:\n" ‖ len ‖ message)`.
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update(b"\x19Ethereum Signed Message:\n");
    hasher.update(message.len().to_string().as_bytes());
    hasher.update(message);
    hasher.finalize().into()
}

/// An Ethereum-style signer address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The address of a public key.
    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        let point = key.to_encoded_point(false);
        let hash = keccak256(&point.as_bytes()[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        Address(out)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Address {
    type Err = SignatureError;

    /// Parses `0x` followed by 40 hex digits (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SignatureError::InvalidAddress(s.chars().take(64).collect());
        let hex = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .ok_or_else(bad)?;
        if hex.len() != 40 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 20];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Address(out))
    }
}

/// Recovers the address that signed `message` (EIP-191) with a 65-byte R ‖ S ‖ V signature.
pub fn recover_signer(message: &[u8], signature: &[u8]) -> Result<Address, SignatureError> {
    let bytes: &[u8; SIGNATURE_LEN] = signature
        .try_into()
        .map_err(|_| SignatureError::Malformed("not 65 bytes"))?;
    let v = bytes[64];
    if v > 1 {
        return Err(SignatureError::Malformed("V must be 0 or 1"));
    }
    let sig = Signature::from_slice(&bytes[..64])
        .map_err(|_| SignatureError::Malformed("R or S out of range"))?;
    // High-S signatures are malleable copies of low-S ones: refuse them.
    if sig.normalize_s().is_some() {
        return Err(SignatureError::Malformed("S is not in the lower half"));
    }
    let recid = RecoveryId::from_byte(v).ok_or(SignatureError::Malformed("bad recovery id"))?;
    let key = VerifyingKey::recover_from_prehash(&eip191_hash(message), &sig, recid)
        .map_err(|_| SignatureError::Unrecoverable)?;
    Ok(Address::from_verifying_key(&key))
}

/// A TEE's signing key. Zeroized on drop; `Debug` shows the address only.
pub struct Signer {
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("address", &self.address())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Signer {
    /// A fresh random key.
    pub fn generate() -> Self {
        loop {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            let key = SigningKey::from_slice(&bytes);
            bytes.zeroize();
            if let Ok(key) = key {
                return Signer { key };
            }
        }
    }

    /// A key from its 32-byte secret scalar (e.g. read from a sealed file).
    pub fn from_secret_bytes(secret: &[u8]) -> Result<Self, SignatureError> {
        SigningKey::from_slice(secret)
            .map(|key| Signer { key })
            .map_err(|_| SignatureError::InvalidKey)
    }

    /// The address verifiers pin.
    pub fn address(&self) -> Address {
        Address::from_verifying_key(self.key.verifying_key())
    }

    /// Signs `message` (EIP-191): 65 bytes R ‖ S ‖ V, S in the lower half.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; SIGNATURE_LEN], SignatureError> {
        let (sig, recid) = self
            .key
            .sign_prehash_recoverable(&eip191_hash(message))
            .map_err(|_| SignatureError::Unrecoverable)?;
        let mut out = [0u8; SIGNATURE_LEN];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = recid.to_byte();
        Ok(out)
    }

    /// TEE_T: fills `transcript_hash` from the output's own session id and records plus the request ranges
    /// TEE_T saw, encodes and signs. Returns the signed message and the digest TEE_K must put into K_OUTPUT.
    pub fn sign_t_output(
        &self,
        output: &mut TOutput,
        request_ranges: &[crate::proto::RequestRange],
    ) -> Result<(SignedMessage, [u8; 32]), SignatureError> {
        output.transcript_hash =
            crate::verify::transcript_hash(&output.session_id, request_ranges, &output.records)
                .to_vec();
        let body = output.encode_to_vec();
        let digest = keccak256(&body);
        let signature = self.sign(&body)?.to_vec();
        let message = SignedMessage {
            body_type: BodyType::TOutput as i32,
            body,
            signature,
        };
        Ok((message, digest))
    }

    /// TEE_K: binds K_OUTPUT to T_OUTPUT's digest, encodes and signs.
    pub fn sign_k_output(
        &self,
        output: &mut KOutput,
        t_output_digest: [u8; 32],
    ) -> Result<SignedMessage, SignatureError> {
        output.t_output_digest = t_output_digest.to_vec();
        let body = output.encode_to_vec();
        let signature = self.sign(&body)?.to_vec();
        Ok(SignedMessage {
            body_type: BodyType::KOutput as i32,
            body,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_recover_gives_the_signer() {
        let signer = Signer::generate();
        let sig = signer.sign(b"hello").unwrap();
        assert_eq!(recover_signer(b"hello", &sig).unwrap(), signer.address());
        assert_ne!(recover_signer(b"hellp", &sig).ok(), Some(signer.address()));
    }

    #[test]
    fn known_address_of_secret_one() {
        // The secp256k1 key with scalar 1 has the well-known address 0x7e5f…bdf.
        let mut secret = [0u8; 32];
        secret[31] = 1;
        let signer = Signer::from_secret_bytes(&secret).unwrap();
        assert_eq!(
            signer.address().to_string(),
            "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf"
        );
    }

    #[test]
    fn eip191_hash_matches_a_known_vector() {
        // ethers.js documentation: hashMessage("Hello World").
        let expected = "a1de988600a42c4b4ab089b619297c17d53cffae5d5120d82d8a92d0bb3b78f2";
        let got: String = eip191_hash(b"Hello World")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn address_parses_and_prints() {
        let a: Address = "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
            .parse()
            .unwrap();
        assert_eq!(a.to_string(), "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf");
        assert!(
            "7e5f4552091a69125d5dfcb7b8c2659029395bdf"
                .parse::<Address>()
                .is_err()
        );
        assert!("0x7e5f".parse::<Address>().is_err());
        assert!(
            "0xzz5f4552091a69125d5dfcb7b8c2659029395bdf"
                .parse::<Address>()
                .is_err()
        );
    }

    #[test]
    fn malformed_signatures_are_errors() {
        assert!(recover_signer(b"m", &[0u8; 64]).is_err());
        assert!(recover_signer(b"m", &[0u8; 65]).is_err());
        let signer = Signer::generate();
        let mut sig = signer.sign(b"m").unwrap();
        sig[64] = 27;
        assert_eq!(
            recover_signer(b"m", &sig),
            Err(SignatureError::Malformed("V must be 0 or 1"))
        );
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let text = format!("{:?}", Signer::generate());
        assert!(text.contains("<redacted>") && text.contains("0x"));
    }
}
