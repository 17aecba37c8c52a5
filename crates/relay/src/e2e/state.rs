//! The client's Olm state at rest: account, sessions, pins and delivered message ids, sealed as one blob
//! under a 32-byte [`StateKey`].
//!
//! ```text
//! sealed = 0x01 (format version) || nonce (12) || ChaCha20-Poly1305(key, nonce, state JSON, aad)
//! aad    = "tessera-relay client state v1"
//! ```
//!
//! A wrong key, a truncated or altered blob all fail with [`E2eError::State`]; nothing is partly loaded.
//! Deriving the key from a passphrase (a password hash) is left to the caller for now.

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{Account, AccountPickle, Session, SessionPickle};
use zeroize::{Zeroize, Zeroizing};

use super::{E2eError, OlmDevice};
use crate::protocol::DeviceId;

const VERSION: u8 = 1;
const AAD: &[u8] = b"tessera-relay client state v1";
const NONCE_LEN: usize = 12;

/// The key that seals a client's state. Never printed; wiped when dropped.
pub struct StateKey([u8; 32]);

impl StateKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        StateKey(key)
    }

    /// A key from its 32 bytes (e.g. read from a key file).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        StateKey(bytes)
    }

    /// Derives a key from a passphrase with Argon2id (`memory_kib`, `passes`, one lane) and `salt`.
    /// Slow on purpose: a guessed passphrase costs an attacker the same work.
    pub fn from_passphrase(
        passphrase: &[u8],
        salt: &[u8],
        memory_kib: u32,
        passes: u32,
    ) -> Result<Self, E2eError> {
        let params = argon2::Params::new(memory_kib, passes, 1, Some(32))
            .map_err(|e| state_error(&format!("key derivation parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        argon
            .hash_password_into(passphrase, salt, &mut key)
            .map_err(|e| state_error(&format!("key derivation: {e}")))?;
        Ok(StateKey(key))
    }
}

impl Drop for StateKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
}

/// The serializable form of an [`OlmDevice`] (inside a sealed blob only: it holds private keys).
#[derive(Serialize, Deserialize)]
pub(crate) struct Snapshot {
    account: AccountPickle,
    sessions: HashMap<DeviceId, Vec<SessionPickle>>,
    pins: HashMap<DeviceId, String>,
    seen: Vec<(DeviceId, String)>,
    /// Inbound session ids per sender identity key, least recently used identity first (absent in
    /// states saved before the cross-device replay guard: rebuilt from the sessions and pins).
    #[serde(default)]
    inbound: Vec<(String, Vec<String>)>,
    /// Peer devices, least recently used first (absent in older states).
    #[serde(default)]
    used: Vec<DeviceId>,
}

fn state_error(reason: &str) -> E2eError {
    E2eError::State(reason.to_owned())
}

/// `header || nonce || ChaCha20-Poly1305(key, nonce, plaintext, aad)` with a random nonce.
pub(crate) fn seal_bytes(
    key: &StateKey,
    header: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, E2eError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| state_error("cannot encrypt"))?;
    let mut sealed = Vec::with_capacity(header.len() + NONCE_LEN + ciphertext.len());
    sealed.extend_from_slice(header);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

/// Opens `nonce || ciphertext` sealed by [`seal_bytes`] (the header already split off).
pub(crate) fn open_bytes(
    key: &StateKey,
    rest: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, E2eError> {
    if rest.len() < NONCE_LEN {
        return Err(state_error("truncated"));
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| state_error("wrong key or altered state"))
}

impl OlmDevice {
    /// Seals the whole state under `key`.
    pub fn seal(&self, key: &StateKey) -> Result<Vec<u8>, E2eError> {
        let snapshot = self.snapshot();
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&snapshot).map_err(|_| state_error("cannot serialize"))?,
        );
        seal_bytes(key, &[VERSION], AAD, &plaintext)
    }

    /// The whole state in serializable form.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            account: self.account.pickle(),
            sessions: self
                .sessions
                .iter()
                .map(|(device, sessions)| {
                    (
                        device.clone(),
                        sessions.iter().map(Session::pickle).collect(),
                    )
                })
                .collect(),
            pins: self
                .pins
                .iter()
                .map(|(device, key)| (device.clone(), key.to_base64()))
                .collect(),
            seen: self.seen.iter().cloned().collect(),
            inbound: self.inbound.export(),
            used: {
                let mut used: Vec<_> = self.used.iter().collect();
                used.sort_by_key(|(_, tick)| **tick);
                used.into_iter().map(|(device, _)| device.clone()).collect()
            },
        }
    }

    /// Opens a state sealed by [`OlmDevice::seal`].
    pub fn unseal(sealed: &[u8], key: &StateKey) -> Result<Self, E2eError> {
        let (&version, rest) = sealed.split_first().ok_or_else(|| state_error("empty"))?;
        if version != VERSION {
            return Err(state_error("unknown format version"));
        }
        let plaintext = open_bytes(key, rest, AAD)?;
        let snapshot: Snapshot =
            serde_json::from_slice(&plaintext).map_err(|_| state_error("malformed state"))?;
        Self::from_snapshot(snapshot)
    }

    /// Rebuilds a device from its serializable form.
    pub(crate) fn from_snapshot(snapshot: Snapshot) -> Result<Self, E2eError> {
        let mut pins = HashMap::new();
        for (device, key) in snapshot.pins {
            let key =
                Curve25519PublicKey::from_base64(&key).map_err(|_| state_error("malformed pin"))?;
            pins.insert(device, key);
        }
        let mut inbound = super::Inbound::default();
        for (identity, ids) in &snapshot.inbound {
            for id in ids {
                inbound.insert(identity, id);
            }
        }
        let used: HashMap<DeviceId, u64> = snapshot.used.into_iter().zip(1..).collect();
        let tick = u64::try_from(used.len()).unwrap_or(u64::MAX);
        let mut device = OlmDevice {
            account: Account::from_pickle(snapshot.account),
            sessions: snapshot
                .sessions
                .into_iter()
                .map(|(device, pickles)| {
                    (
                        device,
                        pickles.into_iter().map(Session::from_pickle).collect(),
                    )
                })
                .collect(),
            pins,
            seen: {
                let mut seen = super::Seen::default();
                for id in snapshot.seen {
                    seen.insert(id);
                }
                seen
            },
            inbound,
            used,
            tick,
        };
        // The sessions themselves guard against replays too (states saved before the record existed).
        for (peer, sessions) in &device.sessions {
            if let Some(pin) = device.pins.get(peer) {
                for session in sessions {
                    device
                        .inbound
                        .insert(&pin.to_base64(), &session.session_id());
                }
            }
        }
        // A state saved before the bounds existed may exceed them.
        device.enforce_limits();
        Ok(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Delivery;
    use crate::protocol::DeviceBundle;

    #[test]
    fn sealed_state_round_trips_and_keeps_sessions_pins_and_dedup() {
        let mut alice = OlmDevice::new();
        let mut bob = OlmDevice::new();
        let (one_time, fallback) = bob.prekeys(2);
        let bundle = DeviceBundle {
            device: "bob".into(),
            identity_key: bob.identity_key(),
            signing_key: bob.signing_key(),
            one_time_key: one_time.into_iter().next(),
            fallback_key: fallback,
        };
        let envelope = alice.encrypt_for(&bundle, b"first").expect("encrypt");
        let delivery = |id: &str, ciphertext: String| Delivery {
            seq: 1,
            from_user: "alice".into(),
            from_device: "alice".into(),
            message_id: id.into(),
            ciphertext,
        };
        let first = delivery("m1", envelope.ciphertext);
        assert_eq!(
            bob.decrypt(&first).expect("decrypt").as_deref(),
            Some(&b"first"[..])
        );

        let key = StateKey::generate();
        let sealed = bob.seal(&key).expect("seal");
        assert!(!sealed.windows(5).any(|w| w == b"first"));
        assert!(
            OlmDevice::unseal(&sealed, &StateKey::generate()).is_err(),
            "wrong key"
        );
        let mut altered = sealed.clone();
        if let Some(last) = altered.last_mut() {
            *last ^= 1;
        }
        assert!(OlmDevice::unseal(&altered, &key).is_err(), "altered");
        assert!(OlmDevice::unseal(&sealed[..5], &key).is_err(), "truncated");

        let mut bob = OlmDevice::unseal(&sealed, &key).expect("unseal");
        assert_eq!(
            bob.decrypt(&first).expect("dedup"),
            None,
            "seen ids survive"
        );
        let next = alice.encrypt_for(&bundle, b"second").expect("encrypt");
        assert_eq!(
            bob.decrypt(&delivery("m2", next.ciphertext))
                .expect("decrypt")
                .as_deref(),
            Some(&b"second"[..]),
            "sessions survive"
        );
        assert_eq!(format!("{key:?}"), "StateKey(<redacted>)");
    }
}
