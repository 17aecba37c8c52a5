//! The transport phase's cipher: one Noise cipher state per direction, run where the bytes lie.
//!
//! The handshake ends with Noise's `Split()`: two 32-byte keys, initiator-to-responder and back. A
//! [`TransportKey`] is one of them. It encrypts a frame's plaintext in place and appends the tag, and
//! decrypts a frame in place, so a fragment is copied once (into its frame) on the way out and once (out
//! of the WebSocket's buffer) on the way in. (`snow`'s transport state encrypts from one buffer into
//! another: a copy of every byte before the cipher runs, into an output buffer the caller zeroes first.)
//!
//! The wire is Noise's, unchanged (docs/channel.md §4.1): `EncryptWithAd` with empty associated data, the
//! nonce 32 zero bits then the 64-bit message counter, little-endian for ChaChaPoly and big-endian for
//! AESGCM (Noise specification §12.3, §12.4). The tests check it against `snow`'s own transport state.

use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use ring::aead::{AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::config::CipherImpl;
use crate::error::ChannelError;
use crate::frame::{KEY_LEN, Suite, TAG_LEN};

/// One direction's key of an established channel (Noise's `CipherState` with its nonce kept by the
/// caller: the writer task owns the send counter, the reader task the receive counter).
pub(crate) struct TransportKey {
    suite: Suite,
    inner: Inner,
}

enum Inner {
    /// RustCrypto's cipher, built for each message from the 32 bytes kept (zeroized on drop).
    Compact(Zeroizing<[u8; KEY_LEN]>),
    /// ring's assembly, its key schedule kept (boxed: ~540 bytes, which a compact key's reader and writer
    /// tasks should not carry), wiped on drop.
    Fast(RingKey),
}

/// A ring key, its expanded schedule (which holds the key itself: AES-256's first round keys, ChaCha20's
/// key) overwritten in place by the all-zero key's when dropped. ring's keys have no `Drop` of their own,
/// and this crate forbids the unsafe code a byte-wise wipe of a foreign type would need; the same
/// algorithm's schedule has the same layout, so the overwrite covers every byte the key's occupied.
struct RingKey {
    key: Box<LessSafeKey>,
    algorithm: &'static Algorithm,
}

impl RingKey {
    fn new(algorithm: &'static Algorithm, key: &[u8; KEY_LEN]) -> Option<Self> {
        let unbound = UnboundKey::new(algorithm, key).ok()?;
        Some(RingKey {
            key: Box::new(LessSafeKey::new(unbound)),
            algorithm,
        })
    }

    /// Replaces the schedule, in place, by the all-zero key's.
    fn wipe(&mut self) {
        if let Ok(zero) = UnboundKey::new(self.algorithm, &[0; KEY_LEN]) {
            *self.key = LessSafeKey::new(zero);
            // The write must happen although nothing reads the key before it is freed.
            std::hint::black_box(&*self.key);
        }
    }
}

impl Drop for RingKey {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl TransportKey {
    /// The key for `suite`, run by `imp`.
    pub(crate) fn new(suite: Suite, imp: CipherImpl, key: &[u8; KEY_LEN]) -> Self {
        let inner = match imp {
            CipherImpl::Compact => Inner::Compact(Zeroizing::new(*key)),
            CipherImpl::Fast => {
                let algorithm = match suite {
                    Suite::ChaChaPoly => &CHACHA20_POLY1305,
                    Suite::AesGcm => &AES_256_GCM,
                };
                // Both algorithms take a 32-byte key, the only way `new` fails.
                match RingKey::new(algorithm, key) {
                    Some(ring) => Inner::Fast(ring),
                    None => Inner::Compact(Zeroizing::new(*key)),
                }
            }
        };
        TransportKey { suite, inner }
    }

    /// The AEAD nonce for message counter `n`.
    fn nonce(&self, n: u64) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&match self.suite {
            Suite::ChaChaPoly => n.to_le_bytes(),
            Suite::AesGcm => n.to_be_bytes(),
        });
        nonce
    }

    /// Encrypts `buf[from..]` in place under counter `n` and appends the tag. Counter 2^64-1 is reserved
    /// (Noise §5.1) and refused.
    pub(crate) fn seal_in_place(
        &self,
        n: u64,
        buf: &mut Vec<u8>,
        from: usize,
    ) -> Result<(), ChannelError> {
        if n == u64::MAX {
            return Err(ChannelError::NonceExhausted);
        }
        let nonce = self.nonce(n);
        let size = buf.len().saturating_sub(from);
        // Both ciphers refuse only a plaintext beyond their limit (far above a frame's).
        let failed = || ChannelError::TooLarge {
            size,
            limit: crate::frame::MAX_PLAINTEXT,
        };
        let plaintext = buf.get_mut(from..).ok_or(ChannelError::Protocol(
            "seal past the end of a frame".into(),
        ))?;
        let tag: [u8; TAG_LEN] = match (&self.inner, self.suite) {
            (Inner::Fast(ring), _) => {
                let tag = ring
                    .key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        plaintext,
                    )
                    .map_err(|_| failed())?;
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(tag.as_ref());
                out
            }
            (Inner::Compact(key), Suite::ChaChaPoly) => ChaCha20Poly1305::new(key.as_ref().into())
                .encrypt_in_place_detached(&nonce.into(), &[], plaintext)
                .map_err(|_| failed())?
                .into(),
            (Inner::Compact(key), Suite::AesGcm) => Aes256Gcm::new(key.as_ref().into())
                .encrypt_in_place_detached(&nonce.into(), &[], plaintext)
                .map_err(|_| failed())?
                .into(),
        };
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Decrypts `buf` (ciphertext then tag) in place under counter `n`; returns the plaintext's length,
    /// at the start of `buf`. On failure no plaintext is left (RustCrypto checks the tag first and leaves
    /// the ciphertext; ring zeroes the buffer). Counter 2^64-1 is reserved and refused.
    pub(crate) fn open_in_place(&self, n: u64, buf: &mut [u8]) -> Result<usize, ()> {
        if n == u64::MAX {
            return Err(());
        }
        let len = buf.len().checked_sub(TAG_LEN).ok_or(())?;
        let nonce = self.nonce(n);
        match (&self.inner, self.suite) {
            (Inner::Fast(ring), _) => ring
                .key
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), buf)
                .map(|plaintext| plaintext.len())
                .map_err(|_| ()),
            (Inner::Compact(key), suite) => {
                let (body, tag) = buf.split_at_mut(len);
                let tag: &[u8] = tag;
                let opened =
                    match suite {
                        Suite::ChaChaPoly => ChaCha20Poly1305::new(key.as_ref().into())
                            .decrypt_in_place_detached(&nonce.into(), &[], body, tag.into()),
                        Suite::AesGcm => Aes256Gcm::new(key.as_ref().into())
                            .decrypt_in_place_detached(&nonce.into(), &[], body, tag.into()),
                    };
                opened.map(|()| len).map_err(|_| ())
            }
        }
    }
}

impl std::fmt::Debug for TransportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let imp = match self.inner {
            Inner::Compact(_) => "compact",
            Inner::Fast(_) => "fast",
        };
        f.debug_struct("TransportKey")
            .field("suite", &self.suite)
            .field("impl", &imp)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snow::{Builder, HandshakeState};

    /// A finished XX handshake between two snow states speaking `suite`.
    fn handshake(suite: Suite) -> (HandshakeState, HandshakeState) {
        let params: snow::params::NoiseParams = suite.noise_params().parse().unwrap();
        let key = |_| Builder::new(params.clone()).generate_keypair().unwrap();
        let (ki, kr) = (key(0), key(1));
        let mut i = Builder::new(params.clone())
            .local_private_key(&ki.private)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut r = Builder::new(params.clone())
            .local_private_key(&kr.private)
            .unwrap()
            .build_responder()
            .unwrap();
        let (mut a, mut b) = ([0u8; 1024], [0u8; 1024]);
        let n = i.write_message(&[], &mut a).unwrap();
        r.read_message(&a[..n], &mut b).unwrap();
        let n = r.write_message(&[], &mut a).unwrap();
        i.read_message(&a[..n], &mut b).unwrap();
        let n = i.write_message(&[], &mut a).unwrap();
        r.read_message(&a[..n], &mut b).unwrap();
        assert!(i.is_handshake_finished() && r.is_handshake_finished());
        (i, r)
    }

    /// Our in-place transport is byte for byte snow's transport state, both directions, both suites,
    /// both implementations, at counters whose bytes tell the two byte orders apart.
    #[test]
    fn the_wire_is_snows() {
        for suite in Suite::ALL {
            for imp in [CipherImpl::Compact, CipherImpl::Fast] {
                let (mut i, r) = handshake(suite);
                let (k1, k2) = i.dangerously_get_raw_split();
                let (send, recv) = (
                    TransportKey::new(suite, imp, &k1),
                    TransportKey::new(suite, imp, &k2),
                );
                let (i, r) = (
                    i.into_stateless_transport_mode().unwrap(),
                    r.into_stateless_transport_mode().unwrap(),
                );
                for (n, len) in [(0u64, 0usize), (1, 1), (258, 100), ((1 << 40) + 3, 65_000)] {
                    let plaintext: Vec<u8> = (0..len).map(|x| (x * 7 + n as usize) as u8).collect();
                    // Ours → snow.
                    let mut frame = vec![0xAA];
                    frame.extend_from_slice(&plaintext);
                    send.seal_in_place(n, &mut frame, 1).unwrap();
                    let mut expected = vec![0u8; len + TAG_LEN];
                    let m = i.write_message(n, &plaintext, &mut expected).unwrap();
                    assert_eq!(&frame[1..], &expected[..m], "{suite:?} {imp:?} n={n}");
                    let mut out = vec![0u8; len + TAG_LEN];
                    let m = r.read_message(n, &frame[1..], &mut out).unwrap();
                    assert_eq!(&out[..m], &plaintext[..]);
                    // Snow → ours, the other direction.
                    let mut sealed = vec![0u8; len + TAG_LEN];
                    let m = r.write_message(n, &plaintext, &mut sealed).unwrap();
                    sealed.truncate(m);
                    let mut tampered = sealed.clone();
                    tampered[m - 1] ^= 1;
                    assert!(recv.open_in_place(n, &mut tampered).is_err());
                    assert!(recv.open_in_place(n + 1, &mut sealed.clone()).is_err());
                    let got = recv.open_in_place(n, &mut sealed).unwrap();
                    assert_eq!(&sealed[..got], &plaintext[..]);
                }
                // The reserved counter is refused both ways.
                assert!(send.seal_in_place(u64::MAX, &mut vec![0, 1, 2], 1).is_err());
                assert!(recv.open_in_place(u64::MAX, &mut [0u8; 32]).is_err());
            }
        }
    }

    /// What `key` seals `message` to, under counter 5.
    fn sealed(key: &TransportKey, message: &[u8]) -> Vec<u8> {
        let mut buf = message.to_vec();
        key.seal_in_place(5, &mut buf, 0).expect("seal");
        buf
    }

    #[test]
    fn a_ring_key_is_overwritten_in_place_by_the_zero_keys_schedule() {
        for suite in [Suite::ChaChaPoly, Suite::AesGcm] {
            let mut key = TransportKey::new(suite, CipherImpl::Fast, &[0x42; KEY_LEN]);
            let zero = TransportKey::new(suite, CipherImpl::Fast, &[0; KEY_LEN]);
            let before = sealed(&key, b"a message");
            assert_ne!(before, sealed(&zero, b"a message"));
            let Inner::Fast(ring) = &mut key.inner else {
                panic!("{suite:?}: not a ring key")
            };
            let schedule: *const LessSafeKey = &*ring.key;
            ring.wipe();
            // The same allocation now holds the all-zero key's schedule: nothing of the old key's.
            assert!(std::ptr::eq(schedule, &*ring.key), "{suite:?}");
            assert_eq!(
                sealed(&key, b"a message"),
                sealed(&zero, b"a message"),
                "{suite:?}"
            );
        }
    }

    #[test]
    fn debug_shows_no_key() {
        let key = TransportKey::new(Suite::AesGcm, CipherImpl::Compact, &[0x5A; KEY_LEN]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("5a") && !shown.contains("90"), "{shown}");
    }
}
