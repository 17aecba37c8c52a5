//! Key material that is zeroized when dropped and never printed.
//!
//! Both types keep their bytes on the heap, so moving the owner moves a pointer and leaves no stray copy of
//! the key on the stack. `Debug` prints only the length. Reading the bytes takes a call named
//! `expose_secret`, so every place that touches raw key material is easy to find.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A fixed-size secret, e.g. a 32-byte key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret<const N: usize>(Box<[u8; N]>);

impl<const N: usize> Secret<N> {
    /// Takes ownership of the bytes and zeroizes the caller's copy.
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

/// A variable-length secret, e.g. a derived key block or a password.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of the vector; it is zeroized when this value drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// Copies a slice into a new secret.
    pub fn from_slice(bytes: &[u8]) -> Self {
        SecretBytes(bytes.to_vec())
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
