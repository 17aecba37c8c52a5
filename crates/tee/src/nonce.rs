//! Per-record nonces and AADs for TLS 1.2 and 1.3 (the codec of record protection).
//!
//! | version / AEAD | nonce | AAD |
//! |---|---|---|
//! | TLS 1.3, any | `iv XOR (0^32 ‖ seq_be64)` | the 5-byte record header: `23 ‖ 0x0303 ‖ len(ciphertext‖tag)` |
//! | TLS 1.2 AES-GCM | `salt(4) ‖ explicit(8)`; the explicit part travels at the start of the payload | `seq_be64 ‖ type ‖ version ‖ len(plaintext)` |
//! | TLS 1.2 ChaCha20-Poly1305 | `iv XOR (0^32 ‖ seq_be64)` (RFC 7905) | as TLS 1.2 AES-GCM |

use crate::record::{ContentType, HEADER_LEN};
use crate::suite::TlsVersion;

/// Length of every nonce and IV here.
pub const NONCE_LEN: usize = 12;
/// Length of the TLS 1.2 AAD.
pub const TLS12_AAD_LEN: usize = 13;

/// `iv XOR seq`, the sequence number big-endian in the last 8 bytes (TLS 1.3, TLS 1.2 ChaCha20, and the
/// explicit-nonce choice of a TLS 1.2 AES-GCM sender).
pub fn xor_nonce(iv: &[u8; NONCE_LEN], seq: u64) -> [u8; NONCE_LEN] {
    let mut nonce = *iv;
    for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
        *n ^= s;
    }
    nonce
}

/// TLS 1.2 AES-GCM: the 4-byte implicit salt (first 4 bytes of the IV) followed by the record's explicit nonce.
pub fn gcm_tls12_nonce(iv: &[u8; NONCE_LEN], explicit: &[u8; 8]) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..4].copy_from_slice(&iv[..4]);
    nonce[4..].copy_from_slice(explicit);
    nonce
}

/// TLS 1.3 AAD: the record header of the protected record (`ciphertext_len` includes the tag).
pub fn tls13_aad(ciphertext_len: u16) -> [u8; HEADER_LEN] {
    let [l0, l1] = ciphertext_len.to_be_bytes();
    [ContentType::ApplicationData.to_u8(), 3, 3, l0, l1]
}

/// TLS 1.2 AAD: `seq ‖ type ‖ version ‖ plaintext_len` (RFC 5246 §6.2.3.3).
pub fn tls12_aad(
    seq: u64,
    content_type: ContentType,
    version: u16,
    plaintext_len: u16,
) -> [u8; TLS12_AAD_LEN] {
    let mut aad = [0u8; TLS12_AAD_LEN];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = content_type.to_u8();
    aad[9..11].copy_from_slice(&version.to_be_bytes());
    aad[11..].copy_from_slice(&plaintext_len.to_be_bytes());
    aad
}

/// Bytes a protected record adds around the plaintext: explicit nonce (TLS 1.2 GCM only) and tag.
pub fn record_overhead(version: TlsVersion, gcm: bool) -> usize {
    match (version, gcm) {
        (TlsVersion::Tls12, true) => crate::record::EXPLICIT_NONCE_LEN + crate::record::TAG_LEN,
        _ => crate::record::TAG_LEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8448_style_nonce_xor() {
        let iv = [
            0x5du8, 0x31, 0x3e, 0xb2, 0x67, 0x12, 0x76, 0xee, 0x13, 0x00, 0x0b, 0x30,
        ];
        assert_eq!(xor_nonce(&iv, 0), iv);
        let n = xor_nonce(&iv, 1);
        assert_eq!(n[11], 0x31);
        assert_eq!(n[..11], iv[..11]);
        let n = xor_nonce(&iv, 0x0102_0304_0506_0708);
        assert_eq!(n[..4], iv[..4]);
        assert_eq!(n[4], 0x67 ^ 1);
    }

    #[test]
    fn aads_have_the_wire_layout() {
        assert_eq!(tls13_aad(0x1234), [23, 3, 3, 0x12, 0x34]);
        let aad = tls12_aad(7, ContentType::ApplicationData, 0x0303, 0x0100);
        assert_eq!(aad, [0, 0, 0, 0, 0, 0, 0, 7, 23, 3, 3, 1, 0]);
        let n = gcm_tls12_nonce(&[9; 12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(n, [9, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
