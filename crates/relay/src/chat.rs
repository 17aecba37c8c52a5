//! A chat device: a [`RelayClient`] and an [`OlmDevice`] together — what a program or an AI agent embeds
//! to send and receive text end to end.
//!
//! * [`ChatDevice::send_text`] encrypts once per device of the recipient and once per other device of
//!   the sender's own account (the copy that keeps them in sync), under one random message id, and
//!   returns when the relay has stored all copies.
//! * [`ChatDevice::receive`] decrypts the next delivery, acknowledges it, and returns it unless it was
//!   seen before (redelivery or replay): exactly once to the application, as long as the caller persists
//!   the state ([`ChatDevice::seal`]) before acknowledging matters to it.
//! * A delivery that can never decrypt (not an Olm message, no session for it, a changed identity key) is
//!   acknowledged, so that it cannot block the messages queued behind it, and reported:
//!   [`ChatDevice::next_event`] returns it as [`ChatEvent::Undecryptable`]; [`ChatDevice::receive`] and
//!   [`ChatDevice::receive_unacked`] log it and keep the last [`MAX_UNDECRYPTABLE`] reports for
//!   [`ChatDevice::take_undecryptable`].
//!
//! Bundles are fetched (claiming a one-time key per device) only for users this device has no cached
//! bundle for; a send refused for an unknown device drops the cache and retries once.

use std::collections::{HashMap, VecDeque};

use crate::client::{ClientError, RelayClient};
use crate::e2e::state::StateKey;
use crate::e2e::{E2eError, OlmDevice};
use crate::protocol::{DeviceBundle, DeviceId, ErrorCode, MessageRef};

/// A chat failure.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The relay or the channel failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Encryption or decryption failed.
    #[error(transparent)]
    E2e(#[from] E2eError),
    /// The recipient has no device to send to.
    #[error("{0} has no registered device")]
    NoDevice(String),
}

/// A received, decrypted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// The sending user.
    pub from_user: String,
    /// The sending device.
    pub from_device: DeviceId,
    /// The sender's message id.
    pub message_id: String,
    /// This device's sequence number of the message (what its acknowledgment names).
    pub seq: u64,
    /// The plaintext.
    pub body: Vec<u8>,
}

/// How many reports of undecryptable deliveries a [`ChatDevice`] keeps for
/// [`ChatDevice::take_undecryptable`] (the oldest are forgotten first; each is also logged).
pub const MAX_UNDECRYPTABLE: usize = 100;

/// A delivery that can never be decrypted. It was acknowledged (the relay deleted it), so that it no
/// longer blocks the messages queued behind it; this report is all that is left of it.
#[derive(Debug)]
pub struct Undecryptable {
    /// The sending user, as the relay names it.
    pub from_user: String,
    /// The sending device, as the relay names it.
    pub from_device: DeviceId,
    /// The sender's message id.
    pub message_id: String,
    /// This device's sequence number of the delivery.
    pub seq: u64,
    /// Why it cannot be decrypted. [`E2eError::IdentityChanged`] deserves the loudest warning: someone
    /// may be impersonating the device.
    pub error: E2eError,
    /// Left unacknowledged at the relay: a message under a changed identity key, which decrypts once the
    /// new key is trusted ([`ChatDevice::trust`]) and comes again on the next connection (reported again
    /// until then, or until it expires). Anything else can never decrypt and was acknowledged, so that it
    /// does not block the messages behind it.
    pub kept: bool,
}

/// What [`ChatDevice::next_event`] returns.
#[derive(Debug)]
pub enum ChatEvent {
    /// A new message, decrypted but not yet acknowledged (see [`ChatDevice::receive_unacked`]).
    Message(ChatMessage),
    /// A delivery that can never be decrypted, already acknowledged.
    Undecryptable(Undecryptable),
}

/// One device of a user, connected to a relay.
#[derive(Debug)]
pub struct ChatDevice {
    username: String,
    device: DeviceId,
    client: RelayClient,
    olm: OlmDevice,
    bundles: HashMap<String, Vec<DeviceBundle>>,
    undecryptable: VecDeque<Undecryptable>,
}

impl ChatDevice {
    /// Registers this device (`device` = its channel key in hex) for `username` over `client`, and
    /// publishes `prekeys` one-time keys and a fallback key.
    pub async fn register(
        client: RelayClient,
        username: &str,
        device: DeviceId,
        olm: OlmDevice,
        prekeys: usize,
    ) -> Result<Self, ChatError> {
        Self::register_with(client, username, device, olm, prekeys, None).await
    }

    /// [`ChatDevice::register`] with an invite token (new account, invite-only relay) or a device-link
    /// token (new device of an existing account).
    pub async fn register_with(
        mut client: RelayClient,
        username: &str,
        device: DeviceId,
        mut olm: OlmDevice,
        prekeys: usize,
        invite: Option<&str>,
    ) -> Result<Self, ChatError> {
        client
            .register_with(username, &olm.identity_key(), &olm.signing_key(), invite)
            .await?;
        let (one_time, fallback) = olm.prekeys(prekeys);
        client.publish_prekeys(one_time, fallback).await?;
        Ok(ChatDevice {
            username: username.to_owned(),
            device,
            client,
            olm,
            bundles: HashMap::new(),
            undecryptable: VecDeque::new(),
        })
    }

    /// Resumes an already registered device with its saved Olm state.
    pub fn resume(client: RelayClient, username: &str, device: DeviceId, olm: OlmDevice) -> Self {
        ChatDevice {
            username: username.to_owned(),
            device,
            client,
            olm,
            bundles: HashMap::new(),
            undecryptable: VecDeque::new(),
        }
    }

    /// The devices to encrypt for: from list_devices when this device already has a session with each
    /// of them (no prekey claimed), else from fetch_bundle (which claims one one-time key per device).
    async fn targets(&mut self, user: &str) -> Result<Vec<DeviceBundle>, ChatError> {
        if !self.bundles.contains_key(user) {
            let devices = self.client.list_devices(user).await?;
            let known = devices
                .iter()
                .filter(|d| d.device != self.device)
                .all(|d| self.olm.has_session(&d.device));
            let bundles = if known {
                devices
                    .into_iter()
                    .map(|d| DeviceBundle {
                        device: d.device,
                        identity_key: d.identity_key,
                        signing_key: d.signing_key,
                        one_time_key: None,
                        fallback_key: None,
                    })
                    .collect()
            } else {
                self.client.fetch_bundle(user).await?
            };
            self.bundles.insert(user.to_owned(), bundles);
        }
        Ok(self.bundles.get(user).cloned().unwrap_or_default())
    }

    /// Sends `text` to `to` end to end under a new message id ([`crate::client::new_message_id`]);
    /// returns the id.
    pub async fn send_text(&mut self, to: &str, text: &str) -> Result<String, ChatError> {
        let message_id = crate::client::new_message_id();
        self.send_text_as(to, text, &message_id).await?;
        Ok(message_id)
    }

    /// Sends `text` to `to` under `message_id`. To retry a send whose outcome is unknown (the connection
    /// broke), call it again with the same id: the relay stores a message id once, so the recipient gets
    /// the text once.
    pub async fn send_text_as(
        &mut self,
        to: &str,
        text: &str,
        message_id: &str,
    ) -> Result<(), ChatError> {
        for attempt in 0..2 {
            let mut bundles = self.targets(to).await?;
            if bundles.is_empty() {
                return Err(ChatError::NoDevice(to.to_owned()));
            }
            if to != self.username {
                bundles.extend(self.targets(&self.username.clone()).await?);
            }
            let mut envelopes = Vec::with_capacity(bundles.len());
            for bundle in bundles.iter().filter(|b| b.device != self.device) {
                envelopes.push(self.olm.encrypt_for(bundle, text.as_bytes())?);
            }
            match self.client.send(message_id, to, envelopes).await {
                Ok(_) => return Ok(()),
                Err(ClientError::Refused {
                    code: ErrorCode::UnknownDevice,
                    ..
                }) if attempt == 0 => {
                    self.bundles.remove(to);
                    self.bundles.remove(&self.username);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(ChatError::NoDevice(to.to_owned()))
    }

    /// The next new message: decrypted, acknowledged, and never returned twice.
    pub async fn receive(&mut self) -> Result<ChatMessage, ChatError> {
        let message = self.receive_unacked(None).await?;
        self.ack(&message).await?;
        Ok(message)
    }

    /// The next new message, decrypted but **not yet acknowledged**: the caller persists its state
    /// ([`ChatDevice::seal`]) and whatever it did with the message, then calls [`ChatDevice::ack`]. A
    /// crash in between means a redelivery, which the persisted dedup state then drops. Redeliveries
    /// and replays already seen are acknowledged here and skipped; deliveries that can never decrypt are
    /// acknowledged, logged and kept for [`ChatDevice::take_undecryptable`]. With `heartbeat`, a `ping`
    /// goes out whenever nothing arrived for that long (keeps the relay's idle timeout away while
    /// listening).
    pub async fn receive_unacked(
        &mut self,
        heartbeat: Option<std::time::Duration>,
    ) -> Result<ChatMessage, ChatError> {
        loop {
            match self.next_event(heartbeat).await? {
                ChatEvent::Message(message) => return Ok(message),
                ChatEvent::Undecryptable(report) => {
                    tracing::warn!(
                        from_user = %report.from_user,
                        from_device = %report.from_device,
                        message_id = %report.message_id,
                        error = %report.error,
                        "acknowledged a delivery that cannot be decrypted"
                    );
                    if self.undecryptable.len() >= MAX_UNDECRYPTABLE {
                        self.undecryptable.pop_front();
                    }
                    self.undecryptable.push_back(report);
                }
            }
        }
    }

    /// The next event: a new message (not yet acknowledged, as [`ChatDevice::receive_unacked`]), or a
    /// delivery that can never decrypt, already acknowledged so that the queue behind it moves on.
    /// Redeliveries and replays already seen are acknowledged and skipped. Every failure to decrypt is
    /// final for that delivery: the relay delivers a device's messages in order, so a session that
    /// could open it later does not exist, and a changed identity key must not be accepted silently.
    pub async fn next_event(
        &mut self,
        heartbeat: Option<std::time::Duration>,
    ) -> Result<ChatEvent, ChatError> {
        loop {
            let delivery = match heartbeat {
                Some(every) => self.client.next_delivery_with_heartbeat(every).await?,
                None => self.client.next_delivery().await?,
            };
            match self.olm.decrypt(&delivery) {
                Ok(Some(body)) => {
                    return Ok(ChatEvent::Message(ChatMessage {
                        from_user: delivery.from_user,
                        from_device: delivery.from_device,
                        message_id: delivery.message_id,
                        seq: delivery.seq,
                        body,
                    }));
                }
                Ok(None) => self.client.ack(vec![delivery.reference()]).await?,
                Err(error) => {
                    let kept = matches!(error, E2eError::IdentityChanged { .. });
                    if !kept {
                        self.client.ack(vec![delivery.reference()]).await?;
                    }
                    return Ok(ChatEvent::Undecryptable(Undecryptable {
                        from_user: delivery.from_user,
                        from_device: delivery.from_device,
                        message_id: delivery.message_id,
                        seq: delivery.seq,
                        error,
                        kept,
                    }));
                }
            }
        }
    }

    /// The reports of undecryptable deliveries that [`ChatDevice::receive`] and
    /// [`ChatDevice::receive_unacked`] skipped (the last [`MAX_UNDECRYPTABLE`]), oldest first; they are
    /// removed from the device.
    pub fn take_undecryptable(&mut self) -> Vec<Undecryptable> {
        self.undecryptable.drain(..).collect()
    }

    /// Acknowledges a message returned by [`ChatDevice::receive_unacked`]: the relay deletes it.
    pub async fn ack(&mut self, message: &ChatMessage) -> Result<(), ChatError> {
        let reference = MessageRef {
            from_device: message.from_device.clone(),
            message_id: message.message_id.clone(),
            seq: message.seq,
        };
        self.client.ack(vec![reference]).await?;
        Ok(())
    }

    /// The Olm state (fingerprints, pins).
    pub fn olm(&self) -> &OlmDevice {
        &self.olm
    }

    /// This device's id (its channel key, hex).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Seals the Olm state for storage (see [`crate::e2e::state`]).
    pub fn seal(&self, key: &StateKey) -> Result<Vec<u8>, ChatError> {
        Ok(self.olm.seal(key)?)
    }

    /// Tops up this device's one-time keys on the relay to `target` (at most 100) when fewer than half
    /// are left; returns how many were published. Each claimed key started a session with someone; past
    /// the last one, new sessions rest on the fallback key, which a replay can reuse.
    pub async fn replenish(&mut self, target: usize) -> Result<usize, ChatError> {
        let target = target.min(100);
        let left = usize::try_from(self.client.count_prekeys().await?).unwrap_or(usize::MAX);
        if left >= target.div_ceil(2) {
            return Ok(0);
        }
        let missing = target - left;
        let one_time = self.olm.one_time_keys(missing);
        self.client.publish_prekeys(one_time, None).await?;
        Ok(missing)
    }

    /// Accepts `identity_key` for `device` (see [`OlmDevice::repin`]) and forgets cached bundles.
    pub fn trust(&mut self, device: &str, identity_key: &str) -> Result<(), ChatError> {
        self.olm.repin(device, identity_key)?;
        self.bundles.clear();
        Ok(())
    }

    /// Carries on over a new connection (after the old one broke), keeping the Olm state.
    pub fn reconnect(&mut self, client: RelayClient) {
        self.client = client;
        self.bundles.clear();
    }

    /// The underlying relay client, read-only (e.g. its recorded frames).
    pub fn client_ref(&self) -> &RelayClient {
        &self.client
    }

    /// The underlying relay client (for list_users, ping, ...).
    pub fn client(&mut self) -> &mut RelayClient {
        &mut self.client
    }

    /// Closes the connection, returning the Olm state.
    pub async fn close(self) -> OlmDevice {
        self.client.close().await;
        self.olm
    }
}
