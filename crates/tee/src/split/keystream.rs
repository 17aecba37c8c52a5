//! TEE_K's half of the split AEAD: it holds the key and hands out keystreams and tag secrets.

use crate::error::{Result, TeeError};
use crate::nonce::NONCE_LEN;
use crate::suite::AeadAlgorithm;
use aes::cipher::{
    BlockCipher, BlockEncrypt, InnerIvInit, KeyInit, KeyIvInit, StreamCipher, StreamCipherSeek,
};
use std::fmt;
use tessera_session::{Secret, SecretBytes};

/// Length of the tag secrets of every AEAD: 32 bytes.
pub const TAG_SECRETS_LEN: usize = 32;

enum Cipher {
    // Boxed so the expanded key schedule lives in one heap place; aes zeroizes it on drop ("zeroize" feature).
    Aes128(Box<aes::Aes128>),
    Aes256(Box<aes::Aes256>),
    ChaCha20(Secret<32>),
}

/// One direction's AEAD key, held only by TEE_K. Never printed; zeroized on drop.
pub struct TeeKKeys {
    algorithm: AeadAlgorithm,
    cipher: Cipher,
}

impl TeeKKeys {
    /// Takes a raw key of the algorithm's length.
    pub fn new(algorithm: AeadAlgorithm, key: &[u8]) -> Result<Self> {
        let expected = algorithm.key_len();
        let wrong = || TeeError::KeyLength {
            what: "AEAD key",
            expected,
            got: key.len(),
        };
        let cipher = match algorithm {
            AeadAlgorithm::Aes128Gcm => Cipher::Aes128(Box::new(
                aes::Aes128::new_from_slice(key).map_err(|_| wrong())?,
            )),
            AeadAlgorithm::Aes256Gcm => Cipher::Aes256(Box::new(
                aes::Aes256::new_from_slice(key).map_err(|_| wrong())?,
            )),
            AeadAlgorithm::ChaCha20Poly1305 => {
                Cipher::ChaCha20(Secret::<32>::from_slice(key).ok_or_else(wrong)?)
            }
        };
        Ok(TeeKKeys { algorithm, cipher })
    }

    /// The AEAD these keys are for.
    pub fn algorithm(&self) -> AeadAlgorithm {
        self.algorithm
    }

    /// The keystream for `len` bytes of one record and its tag secrets. A record is at most
    /// [`MAX_RECORD_KEYSTREAM`] bytes; longer requests are errors.
    pub fn record_secrets(
        &self,
        nonce: &[u8; NONCE_LEN],
        len: usize,
    ) -> Result<(Keystream, TagSecrets)> {
        self.record_secrets_at(nonce, 0, len)
    }

    /// Like [`TeeKKeys::record_secrets`], but the keystream starts `offset` bytes into the record, e.g. to
    /// hand out only the tail of a record (its TLS 1.3 inner content type and padding).
    pub fn record_secrets_at(
        &self,
        nonce: &[u8; NONCE_LEN],
        offset: u64,
        len: usize,
    ) -> Result<(Keystream, TagSecrets)> {
        check_range(offset, len)?;
        let mut stream = vec![0u8; len];
        let secrets = self.xor_keystream(nonce, offset, &mut stream);
        Ok((Keystream(SecretBytes::new(stream)), secrets))
    }

    /// Encrypts (or decrypts) `data` in place with the record's keystream and returns the tag secrets: what
    /// TEE_K does with data it holds itself (the redacted request), without materializing the keystream.
    pub fn encrypt_in_place(&self, nonce: &[u8; NONCE_LEN], data: &mut [u8]) -> Result<TagSecrets> {
        check_range(0, data.len())?;
        Ok(self.xor_keystream(nonce, 0, data))
    }

    /// XORs the keystream from `offset` into `buf` (whole buffer at once) and derives the tag secrets.
    fn xor_keystream(&self, nonce: &[u8; NONCE_LEN], offset: u64, buf: &mut [u8]) -> TagSecrets {
        let mut secrets = [0u8; TAG_SECRETS_LEN];
        match &self.cipher {
            Cipher::Aes128(aes) => gcm_secrets(aes.as_ref(), nonce, offset, buf, &mut secrets),
            Cipher::Aes256(aes) => gcm_secrets(aes.as_ref(), nonce, offset, buf, &mut secrets),
            Cipher::ChaCha20(key) => {
                let mut chacha = chacha20::ChaCha20::new(key.expose_secret().into(), nonce.into());
                // Block 0: the first 32 bytes are the one-time Poly1305 key (r ‖ s).
                chacha.apply_keystream(&mut secrets);
                chacha.seek(64 + offset);
                chacha.apply_keystream(buf);
            }
        }
        TagSecrets {
            algorithm: self.algorithm,
            bytes: Secret::new(secrets),
        }
    }
}

/// Largest keystream one record can need: the TLS 1.2 payload limit, 2^14 + 2048.
pub const MAX_RECORD_KEYSTREAM: usize = crate::record::MAX_CIPHERTEXT_TLS12;

/// Keeps every request inside one record, far from counter wrap-around (and from a panicking seek).
fn check_range(offset: u64, len: usize) -> Result<()> {
    let end = offset.checked_add(len as u64);
    match end {
        Some(end) if end <= MAX_RECORD_KEYSTREAM as u64 => Ok(()),
        _ => Err(TeeError::RecordTooLarge {
            len: usize::try_from(end.unwrap_or(u64::MAX)).unwrap_or(usize::MAX),
            max: MAX_RECORD_KEYSTREAM,
        }),
    }
}

fn gcm_secrets<C>(
    aes: &C,
    nonce: &[u8; NONCE_LEN],
    offset: u64,
    stream: &mut [u8],
    secrets: &mut [u8; TAG_SECRETS_LEN],
) where
    C: BlockEncrypt
        + BlockCipher
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
{
    let (h, ekj0) = secrets.split_at_mut(16);
    aes.encrypt_block(h.into()); // H = E_K(0^128)
    let mut j0 = [0u8; 16];
    j0[..NONCE_LEN].copy_from_slice(nonce);
    j0[15] = 1;
    ekj0.copy_from_slice(&j0);
    aes.encrypt_block(ekj0.into()); // E_K(J0)
    // Data: AES-CTR from J0 + 1, with a 32-bit big-endian counter.
    j0[15] = 2;
    let core = ctr::CtrCore::<&C, ctr::flavors::Ctr32BE>::inner_iv_init(aes, (&j0).into());
    let mut ctr = ctr::Ctr32BE::<&C>::from_core(core);
    ctr.seek(offset);
    ctr.apply_keystream(stream);
}

impl fmt::Debug for TeeKKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TeeKKeys({:?}, <redacted>)", self.algorithm)
    }
}

/// Keystream bytes for one record (or part of one). XOR with plaintext gives ciphertext and back.
/// Zeroized on drop: with the ciphertext it reveals the plaintext.
#[derive(Clone)]
pub struct Keystream(SecretBytes);

impl Keystream {
    /// Wraps keystream bytes received from TEE_K.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Keystream(SecretBytes::new(bytes))
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw keystream, e.g. to send it to the client.
    pub fn expose_secret(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// Gives up the first `len` bytes without a copy, for a message to the client whose secret fields are
    /// zeroized once encoded (the bytes past `len` stay in the vector's spare capacity, which zeroizing a
    /// `Vec` covers too).
    pub fn into_message_bytes(self, len: usize) -> Vec<u8> {
        let mut bytes = self.0.into_public();
        bytes.truncate(len);
        bytes
    }

    /// XORs the keystream into `data`; fails unless the lengths are equal.
    pub fn apply(&self, data: &mut [u8]) -> Result<()> {
        let ks = self.0.expose_secret();
        if ks.len() != data.len() {
            return Err(TeeError::LengthMismatch {
                what: "keystream",
                expected: data.len(),
                got: ks.len(),
            });
        }
        for (d, k) in data.iter_mut().zip(ks) {
            *d ^= k;
        }
        Ok(())
    }
}

impl fmt::Debug for Keystream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keystream({} bytes, <redacted>)", self.0.len())
    }
}

/// The 32 bytes TEE_T needs to make or check one record's tag, without the key:
/// GCM: `H ‖ E_K(J0)`; ChaCha20-Poly1305: the one-time Poly1305 key `r ‖ s`. Zeroized on drop.
#[derive(Clone)]
pub struct TagSecrets {
    algorithm: AeadAlgorithm,
    bytes: Secret<TAG_SECRETS_LEN>,
}

impl TagSecrets {
    /// Wraps tag secrets received from TEE_K.
    pub fn from_bytes(algorithm: AeadAlgorithm, bytes: &[u8]) -> Result<Self> {
        let bytes = Secret::from_slice(bytes).ok_or(TeeError::KeyLength {
            what: "tag secrets",
            expected: TAG_SECRETS_LEN,
            got: bytes.len(),
        })?;
        Ok(TagSecrets { algorithm, bytes })
    }

    /// The AEAD these secrets belong to.
    pub fn algorithm(&self) -> AeadAlgorithm {
        self.algorithm
    }

    /// The raw 32 bytes, e.g. to send them to TEE_T.
    pub fn expose_secret(&self) -> &[u8; TAG_SECRETS_LEN] {
        self.bytes.expose_secret()
    }
}

impl fmt::Debug for TagSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagSecrets({:?}, <redacted>)", self.algorithm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_key_lengths_are_errors() {
        for alg in AeadAlgorithm::ALL {
            assert!(TeeKKeys::new(alg, &[0u8; 15]).is_err());
            assert!(TeeKKeys::new(alg, &vec![0u8; alg.key_len()]).is_ok());
        }
        assert!(TagSecrets::from_bytes(AeadAlgorithm::Aes128Gcm, &[0; 31]).is_err());
    }

    #[test]
    fn offset_keystream_is_a_slice_of_the_whole() {
        for alg in AeadAlgorithm::ALL {
            let keys = TeeKKeys::new(alg, &vec![7u8; alg.key_len()]).unwrap();
            let nonce = [3u8; 12];
            let (whole, s1) = keys.record_secrets(&nonce, 300).unwrap();
            let (tail, s2) = keys.record_secrets_at(&nonce, 77, 100).unwrap();
            assert_eq!(&whole.expose_secret()[77..177], tail.expose_secret());
            assert_eq!(s1.expose_secret(), s2.expose_secret());
        }
    }

    #[test]
    fn requests_beyond_one_record_are_errors() {
        for alg in AeadAlgorithm::ALL {
            let keys = TeeKKeys::new(alg, &vec![7u8; alg.key_len()]).unwrap();
            assert!(keys.record_secrets(&[0; 12], MAX_RECORD_KEYSTREAM).is_ok());
            assert!(
                keys.record_secrets(&[0; 12], MAX_RECORD_KEYSTREAM + 1)
                    .is_err()
            );
            assert!(keys.record_secrets_at(&[0; 12], u64::MAX, 1).is_err());
            assert!(keys.record_secrets_at(&[0; 12], 1 << 40, 0).is_err());
            assert!(
                keys.encrypt_in_place(&[0; 12], &mut vec![0; MAX_RECORD_KEYSTREAM + 1])
                    .is_err()
            );
        }
    }

    #[test]
    fn gcm_h_is_the_encrypted_zero_block() {
        // NIST GCM test case 2: K = 0^128 → H = 66e94bd4ef8a2c3b884cfa59ca342b2e.
        let keys = TeeKKeys::new(AeadAlgorithm::Aes128Gcm, &[0u8; 16]).unwrap();
        let (_, secrets) = keys.record_secrets(&[0u8; 12], 0).unwrap();
        assert_eq!(
            hex::encode(&secrets.expose_secret()[..16]),
            "66e94bd4ef8a2c3b884cfa59ca342b2e"
        );
        // E_K(J0) is the tag of the empty message with empty AAD: 58e2fccefa7e3061367f1d57a4e7455a.
        assert_eq!(
            hex::encode(&secrets.expose_secret()[16..]),
            "58e2fccefa7e3061367f1d57a4e7455a"
        );
    }
}

#[cfg(test)]
mod zeroize_tests {
    fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}

    /// Every field that holds key material zeroizes itself when dropped, so the types holding them do too.
    #[test]
    fn key_material_fields_zeroize_on_drop() {
        zeroized_on_drop::<aes::Aes128>();
        zeroized_on_drop::<aes::Aes256>();
        zeroized_on_drop::<tessera_session::Secret<32>>();
        zeroized_on_drop::<tessera_session::Secret<12>>();
        zeroized_on_drop::<tessera_session::SecretBytes>();
    }
}
