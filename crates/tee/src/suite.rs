//! The nine TLS AEAD cipher suites, their protocol version and their AEAD.

use crate::error::TeeError;
use rustls::crypto::ring::cipher_suite as rs;

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    Tls12,
    /// TLS 1.3 (RFC 8446).
    Tls13,
}

impl TlsVersion {
    /// The rustls protocol version.
    pub fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        }
    }

    /// Largest record payload (ciphertext incl. explicit nonce and tag) a peer may send: 2^14+256 in TLS 1.3
    /// (RFC 8446 §5.2), 2^14+2048 in TLS 1.2 (RFC 5246 §6.2.3).
    pub fn max_ciphertext(self) -> usize {
        match self {
            TlsVersion::Tls12 => crate::record::MAX_CIPHERTEXT_TLS12,
            TlsVersion::Tls13 => crate::record::MAX_CIPHERTEXT_TLS13,
        }
    }
}

/// The AEAD of a cipher suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AeadAlgorithm {
    /// AES-128 in GCM.
    Aes128Gcm,
    /// AES-256 in GCM.
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 8439).
    ChaCha20Poly1305,
}

impl AeadAlgorithm {
    /// All three AEADs.
    pub const ALL: [AeadAlgorithm; 3] = [
        AeadAlgorithm::Aes128Gcm,
        AeadAlgorithm::Aes256Gcm,
        AeadAlgorithm::ChaCha20Poly1305,
    ];

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            AeadAlgorithm::Aes128Gcm => 16,
            AeadAlgorithm::Aes256Gcm | AeadAlgorithm::ChaCha20Poly1305 => 32,
        }
    }

    /// True for the two AES-GCM variants.
    pub fn is_gcm(self) -> bool {
        !matches!(self, AeadAlgorithm::ChaCha20Poly1305)
    }
}

/// One of the nine supported AEAD cipher suites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum CipherSuite {
    Tls13Aes128GcmSha256,
    Tls13Aes256GcmSha384,
    Tls13ChaCha20Poly1305Sha256,
    Tls12EcdheRsaAes128GcmSha256,
    Tls12EcdheRsaAes256GcmSha384,
    Tls12EcdheRsaChaCha20Poly1305Sha256,
    Tls12EcdheEcdsaAes128GcmSha256,
    Tls12EcdheEcdsaAes256GcmSha384,
    Tls12EcdheEcdsaChaCha20Poly1305Sha256,
}

impl CipherSuite {
    /// All nine suites, TLS 1.3 first.
    pub const ALL: [CipherSuite; 9] = [
        CipherSuite::Tls13Aes128GcmSha256,
        CipherSuite::Tls13Aes256GcmSha384,
        CipherSuite::Tls13ChaCha20Poly1305Sha256,
        CipherSuite::Tls12EcdheRsaAes128GcmSha256,
        CipherSuite::Tls12EcdheRsaAes256GcmSha384,
        CipherSuite::Tls12EcdheRsaChaCha20Poly1305Sha256,
        CipherSuite::Tls12EcdheEcdsaAes128GcmSha256,
        CipherSuite::Tls12EcdheEcdsaAes256GcmSha384,
        CipherSuite::Tls12EcdheEcdsaChaCha20Poly1305Sha256,
    ];

    /// The protocol version this suite belongs to.
    pub fn version(self) -> TlsVersion {
        use CipherSuite::*;
        match self {
            Tls13Aes128GcmSha256 | Tls13Aes256GcmSha384 | Tls13ChaCha20Poly1305Sha256 => {
                TlsVersion::Tls13
            }
            _ => TlsVersion::Tls12,
        }
    }

    /// The suite's AEAD.
    pub fn aead(self) -> AeadAlgorithm {
        use CipherSuite::*;
        match self {
            Tls13Aes128GcmSha256
            | Tls12EcdheRsaAes128GcmSha256
            | Tls12EcdheEcdsaAes128GcmSha256 => AeadAlgorithm::Aes128Gcm,
            Tls13Aes256GcmSha384
            | Tls12EcdheRsaAes256GcmSha384
            | Tls12EcdheEcdsaAes256GcmSha384 => AeadAlgorithm::Aes256Gcm,
            _ => AeadAlgorithm::ChaCha20Poly1305,
        }
    }

    /// The IANA name, e.g. `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`.
    pub fn iana_name(self) -> &'static str {
        self.rustls().suite().as_str().unwrap_or("unknown")
    }

    /// The OpenSSL name (`-ciphersuites` for TLS 1.3, `-cipher` for TLS 1.2).
    pub fn openssl_name(self) -> &'static str {
        use CipherSuite::*;
        match self {
            Tls13Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
            Tls13Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
            Tls13ChaCha20Poly1305Sha256 => "TLS_CHACHA20_POLY1305_SHA256",
            Tls12EcdheRsaAes128GcmSha256 => "ECDHE-RSA-AES128-GCM-SHA256",
            Tls12EcdheRsaAes256GcmSha384 => "ECDHE-RSA-AES256-GCM-SHA384",
            Tls12EcdheRsaChaCha20Poly1305Sha256 => "ECDHE-RSA-CHACHA20-POLY1305",
            Tls12EcdheEcdsaAes128GcmSha256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
            Tls12EcdheEcdsaAes256GcmSha384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
            Tls12EcdheEcdsaChaCha20Poly1305Sha256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        }
    }

    /// True for TLS 1.2 suites authenticated by an RSA certificate.
    pub fn needs_rsa_certificate(self) -> bool {
        use CipherSuite::*;
        matches!(
            self,
            Tls12EcdheRsaAes128GcmSha256
                | Tls12EcdheRsaAes256GcmSha384
                | Tls12EcdheRsaChaCha20Poly1305Sha256
        )
    }

    /// The rustls (ring provider) suite.
    pub fn rustls(self) -> rustls::SupportedCipherSuite {
        use CipherSuite::*;
        match self {
            Tls13Aes128GcmSha256 => rs::TLS13_AES_128_GCM_SHA256,
            Tls13Aes256GcmSha384 => rs::TLS13_AES_256_GCM_SHA384,
            Tls13ChaCha20Poly1305Sha256 => rs::TLS13_CHACHA20_POLY1305_SHA256,
            Tls12EcdheRsaAes128GcmSha256 => rs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            Tls12EcdheRsaAes256GcmSha384 => rs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            Tls12EcdheRsaChaCha20Poly1305Sha256 => rs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            Tls12EcdheEcdsaAes128GcmSha256 => rs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            Tls12EcdheEcdsaAes256GcmSha384 => rs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            Tls12EcdheEcdsaChaCha20Poly1305Sha256 => {
                rs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            }
        }
    }

    /// The IANA code point (e.g. 0x1301), as the session messages carry it.
    pub fn iana_code(self) -> u16 {
        u16::from(self.rustls().suite())
    }

    /// The suite with this IANA code point, if it is one of the nine.
    pub fn from_iana_code(code: u32) -> Option<Self> {
        CipherSuite::ALL
            .into_iter()
            .find(|s| u32::from(s.iana_code()) == code)
    }

    /// The suite with this IANA name (e.g. `TLS_AES_128_GCM_SHA256`), if it is one of the nine.
    pub fn from_iana_name(name: &str) -> Option<Self> {
        CipherSuite::ALL
            .into_iter()
            .find(|s| s.iana_name().eq_ignore_ascii_case(name))
    }

    /// The suite rustls negotiated, if it is one of the nine.
    pub fn from_rustls(suite: rustls::CipherSuite) -> Result<Self, TeeError> {
        CipherSuite::ALL
            .into_iter()
            .find(|s| s.rustls().suite() == suite)
            .ok_or_else(|| TeeError::Unsupported(format!("cipher suite {suite:?}")))
    }
}

impl std::fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.iana_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_distinct_suites_map_both_ways() {
        for suite in CipherSuite::ALL {
            assert_eq!(
                CipherSuite::from_rustls(suite.rustls().suite()).unwrap(),
                suite
            );
            assert_eq!(suite.rustls().version(), suite.version().rustls());
        }
        let tls13 = CipherSuite::ALL
            .iter()
            .filter(|s| s.version() == TlsVersion::Tls13);
        assert_eq!(tls13.count(), 3);
        assert_eq!(
            CipherSuite::Tls12EcdheRsaChaCha20Poly1305Sha256.iana_name(),
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
        );
    }
}
