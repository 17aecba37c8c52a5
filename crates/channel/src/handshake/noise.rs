//! The Noise handshake state, kept at one heap address and overwritten in place when dropped.
//!
//! A `snow::HandshakeState` holds, besides its boxed primitives (which wipe themselves: [`super::resolver`]),
//! secrets inline: the chaining key `ck` and the hash `h` of its symmetric state, from which every key of
//! the handshake derives. snow zeroizes neither, and it has no method that would. This crate forbids
//! unsafe code, so those bytes cannot be zeroed through a pointer; but they can be *replaced*: assigning
//! a new `HandshakeState` to the place holding the old one drops the old (its primitives wipe
//! themselves) and writes the new value's bytes over every field of the old, `ck` and `h` included. A
//! Rust type has one layout, whatever the values in it: any `HandshakeState` covers the same bytes,
//! so the replacement is one without secrets, built for the purpose ([`throwaway`]).
//!
//! Two things make that work. The state must not move while it holds secrets (a move copies its bytes
//! and leaves the old copy behind): it is boxed as soon as it is built, when `ck` and `h` hold only the
//! hash of the protocol name and prologue, and only the box moves afterwards. And the overwrite must not
//! be optimized away as a dead store before the free: [`std::hint::black_box`] reads it.

use std::ops::{Deref, DerefMut};

use snow::{Builder, HandshakeState};

use super::resolver::WipingResolver;
use crate::config::CipherImpl;
use crate::error::ChannelError;
use crate::frame::Suite;

/// A handshake's Noise state (derefs to snow's), overwritten in place by a [`throwaway`] when dropped:
/// once the handshake is done, or with whatever error ends it.
pub(crate) struct NoiseState {
    hs: Box<HandshakeState>,
    suite: Suite,
    cipher: CipherImpl,
}

impl NoiseState {
    /// Boxes a state fresh from its builder (before any message: nothing secret inline yet).
    pub(super) fn new(hs: HandshakeState, suite: Suite, cipher: CipherImpl) -> Self {
        NoiseState {
            hs: Box::new(hs),
            suite,
            cipher,
        }
    }

    /// Replaces the state, in place, by a throwaway one.
    fn wipe(&mut self) {
        // Building the throwaway fails only if this crate's Noise names or resolver were broken, and then
        // no handshake would have been built either.
        if let Ok(throwaway) = throwaway(self.suite, self.cipher) {
            *self.hs = throwaway;
            // The write must happen although nothing reads the state before it is freed.
            std::hint::black_box(&*self.hs);
        }
    }
}

impl Deref for NoiseState {
    type Target = HandshakeState;

    fn deref(&self) -> &HandshakeState {
        &self.hs
    }
}

impl DerefMut for NoiseState {
    fn deref_mut(&mut self) -> &mut HandshakeState {
        &mut self.hs
    }
}

impl Drop for NoiseState {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// A `HandshakeState` that holds no secret, to write over a used one: pattern NN of the same suite, on
/// the same resolver. (NN rather than our XX because XX needs a static key, and setting one, even all
/// zeros, costs an X25519 base-point multiplication: a few percent of a handshake. The pattern changes
/// only values, not the type's layout.)
fn throwaway(suite: Suite, cipher: CipherImpl) -> Result<HandshakeState, ChannelError> {
    let name = match suite {
        Suite::ChaChaPoly => "Noise_NN_25519_ChaChaPoly_SHA256",
        Suite::AesGcm => "Noise_NN_25519_AESGCM_SHA256",
    };
    let params = name.parse().map_err(ChannelError::noise)?;
    Builder::with_resolver(params, Box::new(WipingResolver::new(cipher)))
        .build_initiator()
        .map_err(ChannelError::noise)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The throwaway overwrites the same allocation, and what is left there is its own state: the
    /// handshake hash becomes the throwaway's (the hash of its name and empty prologue).
    #[test]
    fn the_state_is_overwritten_in_place() {
        for suite in Suite::ALL {
            for cipher in [CipherImpl::Compact, CipherImpl::Fast] {
                let identity = crate::identity::Identity::generate();
                let hs = super::super::builder(&identity, suite, cipher)
                    .and_then(|b| b.build_initiator().map_err(ChannelError::noise))
                    .unwrap();
                let mut state = NoiseState::new(hs, suite, cipher);
                let mut buf = [0u8; 256];
                state.write_message(b"hello", &mut buf).unwrap();
                let used = state.get_handshake_hash().to_vec();
                let place: *const HandshakeState = &*state;
                state.wipe();
                assert!(std::ptr::eq(place, &*state));
                let fresh = throwaway(suite, cipher).unwrap();
                assert_ne!(state.get_handshake_hash(), &used[..]);
                assert_eq!(state.get_handshake_hash(), fresh.get_handshake_hash());
                assert!(!state.is_handshake_finished() && state.get_remote_static().is_none());
            }
        }
    }
}
