//! The handshake's primitives for `snow`, each wiping its key material when dropped.
//!
//! snow 0.10 zeroizes nothing: its X25519 keeps the private key in a plain array, its ciphers keep the
//! handshake key `k` (RustCrypto's as 32 plain bytes, ring's as an expanded schedule), and its hashes
//! keep whatever was last fed to them (HMAC pads keyed with the chaining key, DH outputs). All of it sits
//! in the `Box<dyn …>`s of a `HandshakeState` and stays in freed memory once the handshake is over.
//! [`WipingResolver`] hands snow the same primitives (the same crates, the same bytes: the tests run
//! handshakes against snow's own resolvers) in wrappers whose `Drop` wipes them:
//!
//! * X25519 on `curve25519-dalek` (snow's own version), the private key in a [`Zeroizing`] array;
//! * ChaChaPoly and AESGCM on RustCrypto ([`CipherImpl::Compact`]: the key in a [`Zeroizing`] array) or
//!   on ring ([`CipherImpl::Fast`]: ring's keys have no `Drop`, so the schedule is overwritten in place by
//!   the all-zero key's, as `cipher.rs` does for transport keys);
//! * SHA-256 (the only hash of [`crate::frame::Suite`]) on `sha2` (Compact) or ring (Fast): neither
//!   wipes itself (`sha2` 0.10 has no `zeroize` feature), so the state is overwritten in place by a fresh
//!   one; HMAC and HKDF, snow's default methods, are redone here with their temporaries zeroized.
//!
//! Anything else a Noise name may ask for (other curves, ciphers, hashes) resolves to `None`: snow then
//! refuses to build the handshake.

use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use curve25519_dalek::montgomery::MontgomeryPoint;
use ring::aead::{
    AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey,
};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Digest;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::CryptoResolver;
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

use crate::config::CipherImpl;
use crate::frame::{KEY_LEN, TAG_LEN};

/// Resolves the primitives of our Noise names to wrappers that wipe their secrets on drop. The cipher
/// and hash run on RustCrypto or ring as `cipher` says (as snow's `DefaultResolver` and its
/// `RingResolver`-first fallback did); X25519 always on `curve25519-dalek`, randomness from the OS.
pub(crate) struct WipingResolver {
    cipher: CipherImpl,
}

impl WipingResolver {
    pub(crate) fn new(cipher: CipherImpl) -> Self {
        WipingResolver { cipher }
    }
}

impl CryptoResolver for WipingResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(OsRandom(SystemRandom::new())))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::<X25519>::default()),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        match (choice, self.cipher) {
            (HashChoice::SHA256, CipherImpl::Compact) => {
                Some(Box::new(Sha256::<sha2::Sha256>::default()))
            }
            (HashChoice::SHA256, CipherImpl::Fast) => {
                Some(Box::new(Sha256::<ring::digest::Context>::default()))
            }
            _ => None,
        }
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        // XChaChaPoly exists only with a snow feature we do not build.
        #[allow(unreachable_patterns)]
        let aead = match choice {
            CipherChoice::ChaChaPoly => Aead::ChaChaPoly,
            CipherChoice::AESGCM => Aead::AesGcm,
            _ => return None,
        };
        match self.cipher {
            CipherImpl::Compact => Some(Box::new(RustCryptoCipher {
                aead,
                key: Zeroizing::new([0; KEY_LEN]),
            })),
            CipherImpl::Fast => Some(Box::new(RingCipher::new(aead)?)),
        }
    }
}

/// The OS's random numbers (ring's `SystemRandom`, as snow's ring resolver).
struct OsRandom(SystemRandom);

impl Random for OsRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest).map_err(|_| snow::Error::Rng)
    }
}

/// X25519 (snow's `Dh25519`, the same `curve25519-dalek` calls), the private key zeroized on drop. (The
/// public key too: no secret, but then no copy of either half outlives the handshake, which
/// `tests/handshake_scrub.rs` checks by looking for the static keys in freed memory.)
#[derive(Default)]
struct X25519 {
    private: Zeroizing<[u8; KEY_LEN]>,
    public: Zeroizing<[u8; KEY_LEN]>,
}

impl X25519 {
    fn derive_public(&mut self) {
        *self.public = MontgomeryPoint::mul_base_clamped(*self.private).to_bytes();
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        let n = privkey.len().min(KEY_LEN);
        self.private.fill(0);
        self.private[..n].copy_from_slice(&privkey[..n]);
        self.derive_public();
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(&mut self.private[..])?;
        self.derive_public();
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public[..]
    }

    fn privkey(&self) -> &[u8] {
        &self.private[..]
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let point: [u8; KEY_LEN] = pubkey
            .get(..KEY_LEN)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = Zeroizing::new(MontgomeryPoint(point).mul_clamped(*self.private).to_bytes());
        out.get_mut(..KEY_LEN)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(&shared[..]);
        Ok(())
    }
}

/// Which AEAD, and its nonce: 32 zero bits then the counter, little-endian for ChaChaPoly, big-endian
/// for AESGCM (Noise §12.3, §12.4).
#[derive(Clone, Copy)]
enum Aead {
    ChaChaPoly,
    AesGcm,
}

impl Aead {
    fn nonce(self, n: u64) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&match self {
            Aead::ChaChaPoly => n.to_le_bytes(),
            Aead::AesGcm => n.to_be_bytes(),
        });
        nonce
    }
}

/// The handshake cipher on RustCrypto (snow's default), the key zeroized on drop.
struct RustCryptoCipher {
    aead: Aead,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl Cipher for RustCryptoCipher {
    fn name(&self) -> &'static str {
        match self.aead {
            Aead::ChaChaPoly => "ChaChaPoly",
            Aead::AesGcm => "AESGCM",
        }
    }

    fn set(&mut self, key: &[u8; KEY_LEN]) {
        self.key.copy_from_slice(key);
    }

    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let nonce = self.aead.nonce(nonce).into();
        let key = self.key.as_ref().into();
        seal_into(plaintext, out, |body, tag_out| {
            let tag = match self.aead {
                Aead::ChaChaPoly => {
                    ChaCha20Poly1305::new(key).encrypt_in_place_detached(&nonce, authtext, body)
                }
                Aead::AesGcm => {
                    Aes256Gcm::new(key).encrypt_in_place_detached(&nonce, authtext, body)
                }
            }
            .expect("a Noise message is within the AEAD's limit");
            tag_out.copy_from_slice(&tag);
        })
    }

    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let nonce = self.aead.nonce(nonce).into();
        let key = self.key.as_ref().into();
        open_into(ciphertext, out, |body, tag| {
            match self.aead {
                Aead::ChaChaPoly => ChaCha20Poly1305::new(key).decrypt_in_place_detached(
                    &nonce,
                    authtext,
                    body,
                    tag.into(),
                ),
                Aead::AesGcm => Aes256Gcm::new(key).decrypt_in_place_detached(
                    &nonce,
                    authtext,
                    body,
                    tag.into(),
                ),
            }
            .is_ok()
        })
    }
}

/// snow's encrypt, in place: `plaintext` copied into `out` (which snow sizes for it and the tag, as its
/// own ciphers index it), sealed there by `seal`, which writes the tag after it; returns the length.
/// Only a plaintext beyond the cipher's limit (far above a Noise message's) can fail `seal`.
fn seal_into(plaintext: &[u8], out: &mut [u8], seal: impl FnOnce(&mut [u8], &mut [u8])) -> usize {
    let len = plaintext.len();
    let (body, tag_out) = out[..len + TAG_LEN].split_at_mut(len);
    body.copy_from_slice(plaintext);
    seal(body, tag_out);
    len + TAG_LEN
}

/// snow's decrypt, in place: the ciphertext's body copied into `out` — decrypted where the plaintext is
/// to be, so no temporary holds it — and opened there by `open` against the tag (false: refused).
fn open_into(
    ciphertext: &[u8],
    out: &mut [u8],
    open: impl FnOnce(&mut [u8], &[u8]) -> bool,
) -> Result<usize, snow::Error> {
    let len = ciphertext
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(snow::Error::Decrypt)?;
    let (body, tag) = ciphertext.split_at(len);
    let out = out.get_mut(..len).ok_or(snow::Error::Decrypt)?;
    out.copy_from_slice(body);
    if open(out, tag) {
        Ok(len)
    } else {
        Err(snow::Error::Decrypt)
    }
}

/// The handshake cipher on ring (snow's `RingResolver`), its key schedule overwritten in place by the
/// all-zero key's when dropped: ring's keys have no `Drop`, and a byte-wise wipe of a foreign type would
/// need the unsafe code this crate forbids. Assigning a `LessSafeKey` writes every byte of the old one
/// (one type, one layout; the key schedule is inline, sized for ring's largest algorithm).
struct RingCipher {
    aead: Aead,
    algorithm: &'static Algorithm,
    key: LessSafeKey,
}

impl RingCipher {
    /// Keyed with zeros until snow sets its key. `None` only if ring refused a 32-byte key.
    fn new(aead: Aead) -> Option<Self> {
        let algorithm = match aead {
            Aead::ChaChaPoly => &CHACHA20_POLY1305,
            Aead::AesGcm => &AES_256_GCM,
        };
        let key = LessSafeKey::new(UnboundKey::new(algorithm, &[0; KEY_LEN]).ok()?);
        Some(RingCipher {
            aead,
            algorithm,
            key,
        })
    }

    /// Replaces the schedule, in place, by the all-zero key's.
    fn wipe(&mut self) {
        self.rekey_with(&[0; KEY_LEN]);
        // The write must happen although nothing reads the key before it is freed.
        std::hint::black_box(&self.key);
    }

    fn rekey_with(&mut self, key: &[u8; KEY_LEN]) {
        // Both algorithms take a 32-byte key (checked in `new`): the only way `UnboundKey::new` fails.
        if let Ok(unbound) = UnboundKey::new(self.algorithm, key) {
            self.key = LessSafeKey::new(unbound);
        }
    }
}

impl Drop for RingCipher {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl Cipher for RingCipher {
    fn name(&self) -> &'static str {
        match self.aead {
            Aead::ChaChaPoly => "ChaChaPoly",
            Aead::AesGcm => "AESGCM",
        }
    }

    fn set(&mut self, key: &[u8; KEY_LEN]) {
        self.rekey_with(key);
    }

    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let nonce = Nonce::assume_unique_for_key(self.aead.nonce(nonce));
        seal_into(plaintext, out, |body, tag_out| {
            let tag = self
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(authtext), body)
                .expect("a Noise message is within the AEAD's limit");
            tag_out.copy_from_slice(tag.as_ref());
        })
    }

    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let nonce = Nonce::assume_unique_for_key(self.aead.nonce(nonce));
        // (snow's own ring cipher, given a short `out`, decrypts in a temporary Vec and frees it holding
        // the plaintext.)
        open_into(ciphertext, out, |body, tag| {
            Tag::try_from(tag).is_ok_and(|tag| {
                self.key
                    .open_in_place_separate_tag(nonce, Aad::from(authtext), tag, body, 0..)
                    .is_ok()
            })
        })
    }
}

/// A SHA-256 implementation: RustCrypto's or ring's.
trait Sha256Engine: Send + Sync + Sized {
    fn fresh() -> Self;
    fn update(&mut self, data: &[u8]);
    /// The digest of what was fed in; the engine is then fresh or about to be reset.
    fn finish(&mut self, out: &mut [u8; 32]);
}

impl Sha256Engine for sha2::Sha256 {
    fn fresh() -> Self {
        sha2::Sha256::new()
    }

    fn update(&mut self, data: &[u8]) {
        Digest::update(self, data);
    }

    fn finish(&mut self, out: &mut [u8; 32]) {
        out.copy_from_slice(&self.finalize_reset());
    }
}

impl Sha256Engine for ring::digest::Context {
    fn fresh() -> Self {
        ring::digest::Context::new(&ring::digest::SHA256)
    }

    fn update(&mut self, data: &[u8]) {
        ring::digest::Context::update(self, data);
    }

    fn finish(&mut self, out: &mut [u8; 32]) {
        out.copy_from_slice(self.clone().finish().as_ref());
    }
}

const SHA256_LEN: usize = 32;
const SHA256_BLOCK: usize = 64;

/// SHA-256 for snow, its state (the last blocks fed in: HMAC pads keyed with the chaining key, DH
/// outputs) overwritten in place by a fresh state when dropped.
struct Sha256<E: Sha256Engine> {
    engine: E,
}

impl<E: Sha256Engine> Default for Sha256<E> {
    fn default() -> Self {
        Sha256 { engine: E::fresh() }
    }
}

impl<E: Sha256Engine> Sha256<E> {
    /// Replaces the state, in place, by a fresh one.
    fn wipe(&mut self) {
        self.engine = E::fresh();
        // The write must happen although nothing reads the state before it is freed.
        std::hint::black_box(&self.engine);
    }
}

impl<E: Sha256Engine> Drop for Sha256<E> {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl<E: Sha256Engine> Hash for Sha256<E> {
    fn name(&self) -> &'static str {
        "SHA256"
    }

    fn block_len(&self) -> usize {
        SHA256_BLOCK
    }

    fn hash_len(&self) -> usize {
        SHA256_LEN
    }

    fn reset(&mut self) {
        self.engine = E::fresh();
    }

    fn input(&mut self, data: &[u8]) {
        self.engine.update(data);
    }

    fn result(&mut self, out: &mut [u8]) {
        let mut digest = Zeroizing::new([0u8; SHA256_LEN]);
        self.engine.finish(&mut digest);
        out[..SHA256_LEN].copy_from_slice(&digest[..]);
    }

    /// snow's default HMAC (RFC 2104), its pads and inner digest zeroized.
    fn hmac(&mut self, key: &[u8], data: &[u8], out: &mut [u8]) {
        assert!(key.len() <= SHA256_BLOCK, "HMAC key longer than a block");
        let mut ipad = Zeroizing::new([0x36u8; SHA256_BLOCK]);
        let mut opad = Zeroizing::new([0x5cu8; SHA256_BLOCK]);
        for (i, k) in key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let mut inner = Zeroizing::new([0u8; SHA256_LEN]);
        self.reset();
        self.input(&ipad[..]);
        self.input(data);
        self.result(&mut inner[..]);
        self.reset();
        self.input(&opad[..]);
        self.input(&inner[..]);
        self.result(out);
    }

    /// snow's default HKDF (Noise §4.3), its temporary key and inputs zeroized.
    fn hkdf(
        &mut self,
        chaining_key: &[u8],
        input_key_material: &[u8],
        outputs: usize,
        out1: &mut [u8],
        out2: &mut [u8],
        out3: &mut [u8],
    ) {
        let mut temp_key = Zeroizing::new([0u8; SHA256_LEN]);
        self.hmac(chaining_key, input_key_material, &mut temp_key[..]);
        self.hmac(&temp_key[..], &[1], out1);
        if outputs == 1 {
            return;
        }
        let mut input = Zeroizing::new([0u8; SHA256_LEN + 1]);
        input[..SHA256_LEN].copy_from_slice(&out1[..SHA256_LEN]);
        input[SHA256_LEN] = 2;
        self.hmac(&temp_key[..], &input[..], out2);
        if outputs == 2 {
            return;
        }
        input[..SHA256_LEN].copy_from_slice(&out2[..SHA256_LEN]);
        input[SHA256_LEN] = 3;
        self.hmac(&temp_key[..], &input[..], out3);
    }
}

#[cfg(test)]
#[path = "resolver_tests.rs"]
mod tests;
