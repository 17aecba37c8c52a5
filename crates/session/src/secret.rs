//! Key material that is zeroized when dropped and never printed.
//!
//! Both types keep their bytes on the heap, so moving the owner moves a pointer and leaves no stray copy of
//! the key on the stack. `Debug` prints only the length. Reading the bytes takes a call named
//! `expose_secret`, so every place that touches raw key material is easy to find.

use std::fmt;

use bytes::Bytes;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A fixed-size secret, e.g. a 32-byte key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret<const N: usize>(Box<[u8; N]>);

impl<const N: usize> Secret<N> {
    /// Moves the bytes to the heap and zeroizes the copy passed in. Arrays are `Copy`: a caller's own
    /// variable is not touched, so a caller holding key bytes should build them in place
    /// ([`Secret::random`]) or zeroize its variable too.
    pub fn new(mut bytes: [u8; N]) -> Self {
        let secret = Secret(Box::new(bytes));
        bytes.zeroize();
        secret
    }

    /// A fresh random secret from the thread CSPRNG.
    pub fn random() -> Self {
        let mut boxed = Box::new([0u8; N]);
        rand::fill(&mut boxed[..]);
        Secret(boxed)
    }

    /// Copies the secret straight to the heap from the caller's buffer (which stays the caller's to
    /// zeroize): no copy is made on the stack, unlike passing an array by value to [`Secret::new`].
    pub fn copy_from(bytes: &[u8; N]) -> Self {
        let mut boxed = Box::new([0u8; N]);
        boxed.copy_from_slice(bytes);
        Secret(boxed)
    }

    /// Copies the secret out of a slice; `None` if the length is not `N`.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != N {
            return None;
        }
        let mut boxed = Box::new([0u8; N]);
        boxed.copy_from_slice(bytes);
        Some(Secret(boxed))
    }

    /// The raw bytes. Named so that every use of raw key material stands out in review.
    pub fn expose_secret(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret<{N}>(<redacted>)")
    }
}

/// A variable-length secret, e.g. a derived key block or a password. Zeroized (its whole capacity) on
/// drop, at memset speed ([`wipe_vec`]): these can be megabytes of keystream.
#[derive(Clone, Default)]
pub struct SecretBytes(Vec<u8>);

impl Zeroize for SecretBytes {
    fn zeroize(&mut self) {
        wipe_vec(&mut self.0);
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretBytes {}

impl SecretBytes {
    /// Takes ownership of the vector; it is zeroized when this value drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// Copies a slice into a new secret.
    pub fn from_slice(bytes: &[u8]) -> Self {
        SecretBytes(bytes.to_vec())
    }

    /// An empty secret with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        SecretBytes(Vec::with_capacity(capacity))
    }

    /// Appends `bytes`. When the buffer is full it moves to a larger one and the old one is zeroized
    /// (a plain `Vec` would free it as it was, leaving a copy of the secret in freed memory).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let needed = self.0.len().saturating_add(bytes.len());
        if needed > self.0.capacity() {
            self.move_to(needed.max(self.0.capacity().saturating_mul(2)));
        }
        self.0.extend_from_slice(bytes);
    }

    /// Makes room for at least `additional` more bytes (moving as [`SecretBytes::extend_from_slice`]
    /// does, and like `Vec::reserve` at least doubling), so that appends up to that length neither move
    /// nor copy the secret.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.0.len().saturating_add(additional);
        if needed > self.0.capacity() {
            self.move_to(needed.max(self.0.capacity().saturating_mul(2)));
        }
    }

    fn move_to(&mut self, capacity: usize) {
        let mut larger = Vec::with_capacity(capacity);
        larger.extend_from_slice(&self.0);
        // The old buffer is zeroized as it drops.
        drop(SecretBytes(std::mem::replace(&mut self.0, larger)));
    }

    /// The raw bytes, writable (e.g. to blank part of them).
    pub fn expose_secret_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Gives up the bytes as a plain vector, for when they stop being secret (e.g. a keystream with its
    /// hidden ranges blanked, published in a proof).
    pub fn into_public(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }

    /// The raw bytes. Named so that every use of raw key material stands out in review.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }
}

/// Zeroizes a message buffer that carried secrets (a keystream, key shares), if `bytes` is the only handle
/// to it, and frees it. Returns whether it did; a buffer still shared (a clone or a slice of it is alive
/// elsewhere) is left to its last holder, which should scrub it in turn.
///
/// For buffers that cross task and channel boundaries as [`Bytes`]: the channel's writer scrubs every
/// message once encrypted, and a receiver scrubs a message once it has taken what it needs from it.
pub fn scrub(bytes: Bytes) -> bool {
    match bytes.try_into_mut() {
        Ok(mut buffer) => {
            wipe(&mut buffer);
            true
        }
        Err(_) => false,
    }
}

/// Zeroizes `bytes` at memset speed: the zeros are written with `fill` and kept by
/// [`zeroize::optimization_barrier`] (the compiler must assume the bytes are read afterwards, so the
/// writes cannot be dropped as dead). For bulk buffers — megabytes of keystream or plaintext — where
/// [`Zeroize`]'s volatile byte-at-a-time writes cost several times as much.
pub fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    zeroize::optimization_barrier(bytes);
}

/// [`wipe`] for a vector: its bytes and its spare capacity (where a truncation left bytes behind), then
/// empties it. What `Zeroize` does for a `Vec<u8>`, at memset speed.
pub fn wipe_vec(bytes: &mut Vec<u8>) {
    wipe(bytes);
    let spare = bytes.spare_capacity_mut();
    spare.fill(std::mem::MaybeUninit::new(0));
    zeroize::optimization_barrier(spare);
    bytes.clear();
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes, <redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_bytes() {
        let key = Secret::new([0xAB; 32]);
        let text = format!("{key:?} {key:#?}");
        assert_eq!(format!("{key:?}"), "Secret<32>(<redacted>)");
        assert!(!text.to_lowercase().contains("ab"), "{text}");
        assert!(!text.contains("171"), "{text}");

        let bytes = SecretBytes::from_slice(b"hunter2-hunter2");
        let text = format!("{bytes:?} {bytes:#?}");
        assert_eq!(format!("{bytes:?}"), "SecretBytes(15 bytes, <redacted>)");
        assert!(!text.contains("hunter"), "{text}");
    }

    #[test]
    fn scrub_takes_only_a_buffer_it_holds_alone() {
        assert!(scrub(Bytes::from(vec![5u8; 32])));
        let shared = Bytes::from(vec![5u8; 32]);
        let other = shared.clone();
        assert!(
            !scrub(shared),
            "a shared buffer is its last holder's to scrub"
        );
        assert_eq!(
            &other[..],
            &[5u8; 32],
            "the other holder's bytes are intact"
        );
        assert!(scrub(other));
        assert!(!scrub(Bytes::from_static(b"not on the heap")));
    }

    #[test]
    fn zeroize_clears_the_bytes() {
        let mut key = Secret::new([7u8; 16]);
        key.zeroize();
        assert_eq!(key.expose_secret(), &[0u8; 16]);

        // zeroize's Vec impl overwrites the whole buffer, then truncates it.
        let mut bytes = SecretBytes::from_slice(&[9u8; 40]);
        bytes.zeroize();
        assert!(bytes.is_empty());
    }

    #[test]
    fn extend_keeps_the_bytes_across_growth() {
        let mut secret = SecretBytes::with_capacity(4);
        let mut want = Vec::new();
        for i in 0..200u8 {
            let chunk = vec![i; usize::from(i % 7)];
            secret.extend_from_slice(&chunk);
            want.extend_from_slice(&chunk);
            assert_eq!(secret.expose_secret(), &want[..]);
        }
        secret.expose_secret_mut()[..3].fill(0);
        want[..3].fill(0);
        assert_eq!(secret.into_public(), want);
        // Growth is geometric: a thousand one-byte appends move the buffer a handful of times.
        let mut secret = SecretBytes::default();
        let mut moves = 0;
        for _ in 0..1000 {
            let before = secret.expose_secret().as_ptr();
            secret.extend_from_slice(&[1]);
            moves += usize::from(secret.expose_secret().as_ptr() != before);
        }
        assert!(moves <= 12, "{moves} moves");
        // Reserved room takes appends without a move.
        secret.reserve(500);
        let before = secret.expose_secret().as_ptr();
        for _ in 0..500 {
            secret.extend_from_slice(&[2]);
        }
        assert_eq!(secret.expose_secret().as_ptr(), before);
        assert_eq!(secret.len(), 1500);
    }

    #[test]
    fn random_secrets_differ_and_slices_check_length() {
        assert_ne!(
            Secret::<32>::random().expose_secret(),
            Secret::<32>::random().expose_secret()
        );
        assert!(Secret::<32>::from_slice(&[1u8; 31]).is_none());
        assert_eq!(
            Secret::<4>::from_slice(&[1, 2, 3, 4]).map(|s| *s.expose_secret()),
            Some([1, 2, 3, 4])
        );
    }
}
