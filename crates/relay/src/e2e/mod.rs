//! End-to-end encryption with Olm (vodozemac): the device-side layer on top of [`crate::client`].
//!
//! An [`OlmDevice`] holds a device's Olm account and its sessions with other devices. The relay only
//! ever sees what it produces: public identity keys, public prekeys, and Olm messages.
//!
//! * A session starts while the recipient is offline: the sender uses the one-time key (or, when none is
//!   left, the fallback key) from the recipient's bundle, and its first messages are pre-key messages.
//! * Each peer device's Curve25519 identity key is pinned on first contact; a later message under another
//!   key is refused with [`E2eError::IdentityChanged`].
//! * Deliveries are deduplicated by `(sender device, message id)`, so a redelivered message reaches the
//!   application once. Both are chosen by the relay, so a replayed pre-key message (built on a fallback
//!   key, which Olm would accept again) is also recognised by its session id, remembered per sender
//!   *identity key* across all device ids ([`limits`]).
//! * The state is bounded: sessions per peer device, peer devices, remembered inbound sessions
//!   ([`limits`]).
//!
//! Ciphertext format on the relay: vodozemac's JSON form of an Olm message, `{"type":0|1,"body":base64}`.
//!
//! The state persists sealed under a key ([`state`]); the dedup window is bounded by count
//! ([`DEDUP_WINDOW`]).

mod dedup;
#[cfg(test)]
mod exposure_test;
pub mod limits;
pub mod state;

pub use dedup::DEDUP_WINDOW;
use dedup::Seen;
use limits::{Inbound, MAX_PEER_DEVICES, MAX_SESSIONS_PER_DEVICE};

use std::collections::HashMap;

use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{Account, OlmMessage, Session, SessionConfig};

use crate::client::Delivery;
use crate::protocol::{DeviceBundle, DeviceId, Envelope, PreKey};

/// An end-to-end failure.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// A key in a bundle or message is not a valid Curve25519 key.
    #[error("invalid key from {device}: {reason}")]
    BadKey {
        /// The device whose key it is.
        device: DeviceId,
        /// Why.
        reason: String,
    },
    /// The peer's bundle has neither a one-time key nor a fallback key.
    #[error("device {0} has no prekey left; it must publish more")]
    NoPrekey(DeviceId),
    /// The ciphertext is not an Olm message.
    #[error("malformed ciphertext from {0}")]
    Malformed(DeviceId),
    /// A message from a device came under an identity key other than the one pinned for it.
    #[error("identity key of {device} changed (pinned {pinned}, got {presented}): refusing")]
    IdentityChanged {
        /// The device.
        device: DeviceId,
        /// The pinned key.
        pinned: String,
        /// The key the message carries.
        presented: String,
    },
    /// A sealed client state could not be opened (wrong key, altered, truncated or malformed).
    #[error("client state: {0}")]
    State(String),
    /// No session could decrypt the message.
    #[error("cannot decrypt a message from {device}: {reason}")]
    Decrypt {
        /// The sending device.
        device: DeviceId,
        /// Why.
        reason: String,
    },
}

/// A device's Olm state: account, sessions per peer device, identity pins, and delivered message ids.
pub struct OlmDevice {
    account: Account,
    /// Sessions per peer device, the most recently used last.
    sessions: HashMap<DeviceId, Vec<Session>>,
    pins: HashMap<DeviceId, Curve25519PublicKey>,
    seen: Seen,
    /// Inbound session ids per sender identity key (the replay guard across device ids).
    inbound: Inbound,
    /// When each peer device was last used (a counter), to forget the least recent beyond the bound.
    used: HashMap<DeviceId, u64>,
    tick: u64,
}

impl std::fmt::Debug for OlmDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OlmDevice")
            .field("identity_key", &self.identity_key())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl Default for OlmDevice {
    fn default() -> Self {
        Self::new()
    }
}

/// A key written for comparison by people: groups of four characters separated by spaces.
pub fn fingerprint(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    chars
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

fn key(device: &str, text: &str) -> Result<Curve25519PublicKey, E2eError> {
    Curve25519PublicKey::from_base64(text).map_err(|e| E2eError::BadKey {
        device: device.to_owned(),
        reason: e.to_string(),
    })
}

impl OlmDevice {
    /// A new device with fresh identity keys.
    pub fn new() -> Self {
        OlmDevice {
            account: Account::new(),
            sessions: HashMap::new(),
            pins: HashMap::new(),
            seen: Seen::default(),
            inbound: Inbound::default(),
            used: HashMap::new(),
            tick: 0,
        }
    }

    /// Marks `device` as just used, then applies the bounds of [`limits`]: at most
    /// [`MAX_SESSIONS_PER_DEVICE`] sessions per device (the least recently used dropped), at most
    /// [`MAX_PEER_DEVICES`] devices (the least recently used forgotten: pin and sessions).
    fn touch(&mut self, device: &str) {
        self.tick += 1;
        self.used.insert(device.to_owned(), self.tick);
        self.enforce_limits();
    }

    fn enforce_limits(&mut self) {
        for sessions in self.sessions.values_mut() {
            let excess = sessions.len().saturating_sub(MAX_SESSIONS_PER_DEVICE);
            sessions.drain(..excess);
        }
        let mut peers: HashMap<&DeviceId, u64> = HashMap::new();
        for device in self.pins.keys().chain(self.sessions.keys()) {
            peers.insert(device, self.used.get(device).copied().unwrap_or(0));
        }
        let excess = peers.len().saturating_sub(MAX_PEER_DEVICES);
        let forget = limits::least_recent(peers.into_iter(), excess);
        for device in forget {
            tracing::debug!(%device, "forgetting the least recently used peer device");
            self.pins.remove(&device);
            self.sessions.remove(&device);
            self.used.remove(&device);
        }
        self.used.retain(|device, _| {
            self.pins.contains_key(device) || self.sessions.contains_key(device)
        });
    }

    /// The Curve25519 identity key (base64), registered as the device's `identity_key`.
    pub fn identity_key(&self) -> String {
        self.account.curve25519_key().to_base64()
    }

    /// The Ed25519 signing key (base64), registered as the device's `signing_key`.
    pub fn signing_key(&self) -> String {
        self.account.ed25519_key().to_base64()
    }

    /// This device's fingerprint: its identity key in groups of four characters, for people to compare.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.identity_key())
    }

    /// The identity key pinned for `device`, as a fingerprint; `None` before first contact.
    pub fn pinned_fingerprint(&self, device: &str) -> Option<String> {
        self.pins
            .get(device)
            .map(|key| fingerprint(&key.to_base64()))
    }

    /// Whether this device has an Olm session with `device` (then no prekey is needed to write to it).
    pub fn has_session(&self, device: &str) -> bool {
        self.sessions.get(device).is_some_and(|s| !s.is_empty())
    }

    /// Pins `identity_key` (base64) for `device` in place of whatever was pinned, and forgets the
    /// sessions with it (they belong to the old key). Only after the key was checked with its owner over
    /// another channel: this is how a reinstalled device is accepted.
    pub fn repin(&mut self, device: &str, identity_key: &str) -> Result<(), E2eError> {
        let presented = key(device, identity_key)?;
        self.pins.insert(device.to_owned(), presented);
        self.sessions.remove(device);
        self.touch(device);
        Ok(())
    }

    /// Generates `count` one-time keys and a new fallback key, marks them published, and returns their
    /// public halves for publish_prekeys.
    pub fn prekeys(&mut self, count: usize) -> (Vec<PreKey>, Option<PreKey>) {
        self.account.generate_one_time_keys(count);
        self.account.generate_fallback_key();
        let as_prekey = |(id, key): (vodozemac::KeyId, Curve25519PublicKey)| PreKey {
            key_id: id.to_base64(),
            key: key.to_base64(),
        };
        let one_time = self
            .account
            .one_time_keys()
            .into_iter()
            .map(as_prekey)
            .collect();
        let fallback = self
            .account
            .fallback_key()
            .into_iter()
            .map(as_prekey)
            .next();
        self.account.mark_keys_as_published();
        (one_time, fallback)
    }

    /// Generates `count` new one-time keys (the fallback key stays), marks them published, and returns
    /// their public halves.
    pub fn one_time_keys(&mut self, count: usize) -> Vec<PreKey> {
        self.account.generate_one_time_keys(count);
        let one_time = self
            .account
            .one_time_keys()
            .into_iter()
            .map(|(id, key)| PreKey {
                key_id: id.to_base64(),
                key: key.to_base64(),
            })
            .collect();
        self.account.mark_keys_as_published();
        one_time
    }

    /// Encrypts `plaintext` for one device of a bundle, starting a session from its prekeys when there
    /// is none yet.
    pub fn encrypt_for(
        &mut self,
        bundle: &DeviceBundle,
        plaintext: &[u8],
    ) -> Result<Envelope, E2eError> {
        let device = &bundle.device;
        let identity = key(device, &bundle.identity_key)?;
        self.pin(device, identity)?;
        if self.sessions.get(device).is_none_or(Vec::is_empty) {
            let prekey = bundle
                .one_time_key
                .as_ref()
                .or(bundle.fallback_key.as_ref())
                .ok_or_else(|| E2eError::NoPrekey(device.clone()))?;
            let session = self
                .account
                .create_outbound_session(
                    SessionConfig::version_1(),
                    identity,
                    key(device, &prekey.key)?,
                )
                .map_err(|e| E2eError::BadKey {
                    device: device.clone(),
                    reason: e.to_string(),
                })?;
            self.sessions
                .entry(device.clone())
                .or_default()
                .push(session);
        }
        self.touch(device);
        self.encrypt_existing(device, plaintext)
    }

    /// Encrypts for a device this device already has a session with (e.g. to reply).
    pub fn encrypt_existing(
        &mut self,
        device: &str,
        plaintext: &[u8],
    ) -> Result<Envelope, E2eError> {
        let session = self
            .sessions
            .get_mut(device)
            .and_then(|sessions| sessions.last_mut())
            .ok_or_else(|| E2eError::NoPrekey(device.to_owned()))?;
        let message = session.encrypt(plaintext).map_err(|e| E2eError::Decrypt {
            device: device.to_owned(),
            reason: e.to_string(),
        })?;
        let ciphertext =
            serde_json::to_string(&message).map_err(|_| E2eError::Malformed(device.to_owned()))?;
        Ok(Envelope {
            device: device.to_owned(),
            ciphertext,
        })
    }

    fn pin(&mut self, device: &str, presented: Curve25519PublicKey) -> Result<(), E2eError> {
        match self.pins.get(device) {
            Some(pinned) if *pinned != presented => Err(E2eError::IdentityChanged {
                device: device.to_owned(),
                pinned: pinned.to_base64(),
                presented: presented.to_base64(),
            }),
            Some(_) => Ok(()),
            None => {
                self.pins.insert(device.to_owned(), presented);
                self.touch(device);
                Ok(())
            }
        }
    }

    /// Decrypts a delivery. `Ok(None)` when this message was already decrypted (a redelivery or a replay):
    /// the caller acknowledges it and shows nothing.
    pub fn decrypt(&mut self, delivery: &Delivery) -> Result<Option<Vec<u8>>, E2eError> {
        let device = &delivery.from_device;
        let id = (device.clone(), delivery.message_id.clone());
        if self.seen.contains(&id) {
            return Ok(None);
        }
        let message: OlmMessage = serde_json::from_str(&delivery.ciphertext)
            .map_err(|_| E2eError::Malformed(device.clone()))?;
        // A changed identity is refused before anything else; a device seen for the first time is pinned
        // only once its message decrypts (below), so that what fails to decrypt leaves no trace.
        if let OlmMessage::PreKey(pre_key) = &message
            && let Some(pinned) = self.pins.get(device)
            && *pinned != pre_key.identity_key()
        {
            return Err(E2eError::IdentityChanged {
                device: device.clone(),
                pinned: pinned.to_base64(),
                presented: pre_key.identity_key().to_base64(),
            });
        }
        if let Some(sessions) = self.sessions.get_mut(device) {
            for index in (0..sessions.len()).rev() {
                if let Ok(plaintext) = sessions[index].decrypt(&message) {
                    let session = sessions.remove(index);
                    sessions.push(session);
                    self.seen.insert(id);
                    self.touch(device);
                    return Ok(Some(plaintext));
                }
            }
        }
        let OlmMessage::PreKey(pre_key) = &message else {
            return Err(E2eError::Decrypt {
                device: device.clone(),
                reason: "no session decrypts it".into(),
            });
        };
        // A pre-key message of a session this device already has, that the session cannot decrypt, is a
        // replay (its message key is used up). Olm would build a second session from it when it rests on
        // the fallback key, handing the application the same plaintext again: never do that.
        // The device id and the message id are the relay's to choose: the session is recognised by its id
        // under the sender's identity key, whatever device it is delivered from, and long after the
        // session itself was dropped (limits).
        let session_id = pre_key.session_id();
        let identity = pre_key.identity_key().to_base64();
        if self.inbound.contains(&identity, &session_id)
            || self
                .sessions
                .get(device)
                .is_some_and(|sessions| sessions.iter().any(|s| s.session_id() == session_id))
        {
            tracing::warn!(%device, message_id = %delivery.message_id, "dropped a replayed pre-key message");
            self.seen.insert(id);
            return Ok(None);
        }
        let created = self
            .account
            .create_inbound_session(SessionConfig::version_1(), pre_key.identity_key(), pre_key)
            .map_err(|e| E2eError::Decrypt {
                device: device.clone(),
                reason: e.to_string(),
            })?;
        self.pin(device, pre_key.identity_key())?;
        self.inbound
            .insert(&identity, &created.session.session_id());
        self.sessions
            .entry(device.clone())
            .or_default()
            .push(created.session);
        self.seen.insert(id);
        self.touch(device);
        Ok(Some(created.plaintext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str, ciphertext: String) -> Delivery {
        Delivery {
            seq: 1,
            from_user: "alice".into(),
            from_device: "alice-device".into(),
            message_id: id.into(),
            ciphertext,
        }
    }

    #[test]
    fn a_replayed_fallback_key_pre_key_message_reaches_the_application_once() {
        let (mut alice, mut bob) = (OlmDevice::new(), OlmDevice::new());
        // No one-time key left: the session rests on the fallback key, which Olm accepts again.
        let (_, fallback) = bob.prekeys(0);
        let bundle = DeviceBundle {
            device: "bob-device".into(),
            identity_key: bob.identity_key(),
            signing_key: bob.signing_key(),
            one_time_key: None,
            fallback_key: fallback,
        };
        let first = alice.encrypt_for(&bundle, b"pay 10").expect("encrypt");
        let second = alice.encrypt_for(&bundle, b"pay 20").expect("encrypt");
        assert_eq!(
            bob.decrypt(&delivery("m1", first.ciphertext.clone()))
                .expect("decrypt"),
            Some(b"pay 10".to_vec())
        );
        assert_eq!(
            bob.decrypt(&delivery("m2", second.ciphertext))
                .expect("decrypt"),
            Some(b"pay 20".to_vec())
        );
        // The same delivery again: the dedup window drops it.
        assert_eq!(
            bob.decrypt(&delivery("m1", first.ciphertext.clone()))
                .expect("redelivery"),
            None
        );
        // Replayed under another message id (the relay can alter ids; they are not encrypted): Olm alone
        // would open a second session from the fallback key and yield "pay 10" again.
        assert_eq!(
            bob.decrypt(&delivery("forged-id", first.ciphertext))
                .expect("replay"),
            None
        );
        assert_eq!(bob.sessions["alice-device"].len(), 1, "no second session");
    }

    fn fallback_bundle(bob: &mut OlmDevice) -> DeviceBundle {
        let (_, fallback) = bob.prekeys(0);
        DeviceBundle {
            device: "bob-device".into(),
            identity_key: bob.identity_key(),
            signing_key: bob.signing_key(),
            one_time_key: None,
            fallback_key: fallback,
        }
    }

    fn from(device: &str, id: &str, ciphertext: &str) -> Delivery {
        Delivery {
            from_device: device.into(),
            ..delivery(id, ciphertext.to_owned())
        }
    }

    #[test]
    fn a_replay_under_a_forged_device_id_reaches_the_application_once() {
        let (mut alice, mut bob) = (OlmDevice::new(), OlmDevice::new());
        let bundle = fallback_bundle(&mut bob);
        let first = alice.encrypt_for(&bundle, b"pay 10").expect("encrypt");
        assert_eq!(
            bob.decrypt(&from("alice-device", "m1", &first.ciphertext))
                .expect("decrypt"),
            Some(b"pay 10".to_vec())
        );
        // The relay names another device (and keeps or changes the message id): still a replay.
        for (device, id) in [("forged-device", "m1"), ("forged-2", "other-id")] {
            assert_eq!(
                bob.decrypt(&from(device, id, &first.ciphertext))
                    .expect("replay"),
                None
            );
        }
        assert!(!bob.has_session("forged-device") && bob.pinned_fingerprint("forged-2").is_none());
        // It stays a replay after the session itself is gone (repin drops it; so does the bound on
        // sessions per device) and after a seal and unseal.
        bob.repin("alice-device", &alice.identity_key())
            .expect("repin");
        let key = state::StateKey::generate();
        let mut bob = OlmDevice::unseal(&bob.seal(&key).expect("seal"), &key).expect("unseal");
        assert_eq!(
            bob.decrypt(&from("forged-3", "m9", &first.ciphertext))
                .expect("replay"),
            None
        );
    }

    #[test]
    fn sessions_per_device_and_peer_devices_are_bounded() {
        let (mut alice, mut bob) = (OlmDevice::new(), OlmDevice::new());
        let bundle = fallback_bundle(&mut bob);
        // Alice starts a new session from bob's fallback key with every message.
        for n in 0..MAX_SESSIONS_PER_DEVICE + 3 {
            let text = format!("message {n}");
            let envelope = alice
                .encrypt_for(&bundle, text.as_bytes())
                .expect("encrypt");
            alice
                .repin("bob-device", &bob.identity_key())
                .expect("forget");
            assert_eq!(
                bob.decrypt(&from("alice-device", &n.to_string(), &envelope.ciphertext))
                    .expect("decrypt"),
                Some(text.into_bytes())
            );
        }
        assert_eq!(bob.sessions["alice-device"].len(), MAX_SESSIONS_PER_DEVICE);
        assert!(bob.has_session("alice-device"));
        // Peer devices: the least recently used are forgotten beyond the bound.
        let key = alice.identity_key();
        for n in 0..MAX_PEER_DEVICES + 10 {
            bob.repin(&format!("peer{n}"), &key).expect("pin");
        }
        assert_eq!(bob.pins.len(), MAX_PEER_DEVICES);
        assert!(bob.pinned_fingerprint("alice-device").is_none());
        assert!(bob.pinned_fingerprint("peer9").is_none());
        assert!(bob.pinned_fingerprint("peer10").is_some());
        assert!(bob.sessions.len() <= MAX_PEER_DEVICES);
    }

    #[test]
    fn what_fails_to_decrypt_pins_nothing_and_a_changed_identity_is_refused() {
        let mut bob = OlmDevice::new();
        let bundle = |bob: &mut OlmDevice, fallback| DeviceBundle {
            device: "bob-device".into(),
            identity_key: bob.identity_key(),
            signing_key: bob.signing_key(),
            one_time_key: None,
            fallback_key: fallback,
        };
        // A pre-key message built on a key that is not bob's (a relay made it up): it cannot decrypt, and
        // leaves neither a pin nor a session entry behind.
        let (_, made_up) = OlmDevice::new().prekeys(0);
        let forged = OlmDevice::new()
            .encrypt_for(&bundle(&mut bob, made_up), b"x")
            .expect("encrypt");
        assert!(bob.decrypt(&delivery("m0", forged.ciphertext)).is_err());
        assert!(bob.pins.is_empty() && bob.sessions.is_empty());

        let (_, fallback) = bob.prekeys(0);
        let real = bundle(&mut bob, fallback);
        let mut alice = OlmDevice::new();
        let hello = alice.encrypt_for(&real, b"hello").expect("encrypt");
        assert_eq!(
            bob.decrypt(&delivery("m1", hello.ciphertext))
                .expect("decrypt"),
            Some(b"hello".to_vec())
        );
        assert_eq!(
            bob.pinned_fingerprint("alice-device"),
            Some(alice.fingerprint())
        );
        // Someone else's pre-key message under alice's device name: refused, the pin kept.
        let impostor = OlmDevice::new().encrypt_for(&real, b"hi").expect("encrypt");
        assert!(matches!(
            bob.decrypt(&delivery("m2", impostor.ciphertext)),
            Err(E2eError::IdentityChanged { .. })
        ));
        assert_eq!(
            bob.pinned_fingerprint("alice-device"),
            Some(alice.fingerprint())
        );
    }
}
