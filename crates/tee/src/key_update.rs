//! TLS 1.3 traffic secrets and key updates (RFC 8446 §7.1–7.3): from a traffic secret TEE_K derives the record
//! key and IV, and on a KeyUpdate the next generation `HKDF-Expand-Label(secret, "traffic upd", "", Hash.len)`.
//!
//! rustls extracts only key and IV; the traffic secrets come from its key log (labels
//! `CLIENT_TRAFFIC_SECRET_0` / `SERVER_TRAFFIC_SECRET_0`), captured only inside TEE_K.

use crate::error::{Result, TeeError};
use crate::nonce::NONCE_LEN;
use crate::suite::{AeadAlgorithm, CipherSuite, TlsVersion};
use hmac::{Hmac, Mac};
use std::fmt;
use tessera_session::{Secret, SecretBytes};

/// The hash of a TLS 1.3 suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrafficHash {
    Sha256,
    Sha384,
}

impl TrafficHash {
    fn len(self) -> usize {
        match self {
            TrafficHash::Sha256 => 32,
            TrafficHash::Sha384 => 48,
        }
    }
}

/// HKDF-Expand-Label for outputs of at most one hash block (all TLS 1.3 keys, IVs and secrets).
fn expand_label(hash: TrafficHash, secret: &[u8], label: &[u8], len: usize) -> Result<SecretBytes> {
    // HkdfLabel = length(2) ‖ len("tls13 " + label)(1) ‖ "tls13 " ‖ label ‖ len(context = "")(1)
    let mut info = Vec::with_capacity(10 + label.len());
    let len16 = u16::try_from(len).map_err(|_| TeeError::Unsupported("HKDF length".into()))?;
    info.extend_from_slice(&len16.to_be_bytes());
    info.push(6 + label.len() as u8);
    info.extend_from_slice(b"tls13 ");
    info.extend_from_slice(label);
    info.push(0);
    info.push(1); // HKDF-Expand counter of the first (only) block
    let bad_secret = |_| TeeError::KeyLength {
        what: "traffic secret",
        expected: hash.len(),
        got: secret.len(),
    };
    let mut block = match hash {
        TrafficHash::Sha256 => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(bad_secret)?;
            mac.update(&info);
            mac.finalize().into_bytes().to_vec()
        }
        TrafficHash::Sha384 => {
            let mut mac = Hmac::<sha2::Sha384>::new_from_slice(secret).map_err(bad_secret)?;
            mac.update(&info);
            mac.finalize().into_bytes().to_vec()
        }
    };
    if len > block.len() {
        return Err(TeeError::Unsupported(
            "HKDF output longer than one block".into(),
        ));
    }
    block.truncate(len);
    Ok(SecretBytes::new(block))
}

/// A TLS 1.3 application traffic secret of one direction. Zeroized on drop, never printed.
pub struct TrafficSecret {
    hash: TrafficHash,
    aead: AeadAlgorithm,
    secret: SecretBytes,
}

impl TrafficSecret {
    /// Wraps a traffic secret of a TLS 1.3 `suite`; fails for TLS 1.2 suites or a wrong length.
    pub fn new(suite: CipherSuite, secret: &[u8]) -> Result<Self> {
        let hash = match suite {
            _ if suite.version() != TlsVersion::Tls13 => {
                return Err(TeeError::Unsupported(format!(
                    "{suite} has no traffic secret"
                )));
            }
            CipherSuite::Tls13Aes256GcmSha384 => TrafficHash::Sha384,
            _ => TrafficHash::Sha256,
        };
        if secret.len() != hash.len() {
            return Err(TeeError::KeyLength {
                what: "traffic secret",
                expected: hash.len(),
                got: secret.len(),
            });
        }
        Ok(TrafficSecret {
            hash,
            aead: suite.aead(),
            secret: SecretBytes::from_slice(secret),
        })
    }

    /// The record key: `HKDF-Expand-Label(secret, "key", "", key_len)`.
    pub fn key(&self) -> Result<SecretBytes> {
        expand_label(
            self.hash,
            self.secret.expose_secret(),
            b"key",
            self.aead.key_len(),
        )
    }

    /// The record IV: `HKDF-Expand-Label(secret, "iv", "", 12)`.
    pub fn iv(&self) -> Result<Secret<NONCE_LEN>> {
        let iv = expand_label(self.hash, self.secret.expose_secret(), b"iv", NONCE_LEN)?;
        Secret::from_slice(iv.expose_secret()).ok_or(TeeError::KeyLength {
            what: "IV",
            expected: NONCE_LEN,
            got: iv.len(),
        })
    }

    /// The next generation: `HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)`.
    pub fn next(&self) -> Result<Self> {
        Ok(TrafficSecret {
            hash: self.hash,
            aead: self.aead,
            secret: expand_label(
                self.hash,
                self.secret.expose_secret(),
                b"traffic upd",
                self.hash.len(),
            )?,
        })
    }
}

impl fmt::Debug for TrafficSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrafficSecret({:?}, <redacted>)", self.hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8448 §3 (simple 1-RTT handshake): the server's application traffic secret and its write key and IV.
    #[test]
    fn rfc8448_server_application_key_and_iv() {
        let secret =
            hex::decode("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643")
                .unwrap();
        let ts = TrafficSecret::new(CipherSuite::Tls13Aes128GcmSha256, &secret).unwrap();
        assert_eq!(
            hex::encode(ts.key().unwrap().expose_secret()),
            "9f02283b6c9c07efc26bb9f2ac92e356"
        );
        assert_eq!(
            hex::encode(ts.iv().unwrap().expose_secret()),
            "cf782b88dd83549aadf1e984"
        );
        let next = ts.next().unwrap();
        assert_ne!(next.secret.expose_secret(), ts.secret.expose_secret());
        assert_eq!(next.secret.len(), 32);
    }

    #[test]
    fn tls12_suites_and_wrong_lengths_are_rejected() {
        assert!(TrafficSecret::new(CipherSuite::Tls12EcdheRsaAes128GcmSha256, &[0; 32]).is_err());
        assert!(TrafficSecret::new(CipherSuite::Tls13Aes256GcmSha384, &[0; 32]).is_err());
        assert!(TrafficSecret::new(CipherSuite::Tls13Aes256GcmSha384, &[0; 48]).is_ok());
    }
}
