//! The relay's wire messages: what a device asks ([`Request`]) and what the relay answers or pushes
//! ([`Reply`]). The encoding lives apart, in [`codec`], so the codec can be fuzzed alone.
//!
//! Every request carries a client-chosen request number `req`, echoed in its reply; pushed
//! [`Reply::Deliver`] messages carry none. Key material and ciphertexts are opaque strings to the relay
//! (a client normally puts unpadded base64 there, as vodozemac prints its keys and Olm messages): the
//! relay stores and forwards them, and never interprets them.

pub mod codec;

use serde::{Deserialize, Serialize};

/// A device's identity on the relay: its channel (Noise static) public key as 64 lowercase hex digits.
/// The channel handshake proves it, so the relay never takes it from a message body for the caller.
pub type DeviceId = String;

/// A prekey a device publishes for others to start an Olm session with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreKey {
    /// The key's id, chosen by the device (unique among its keys).
    pub key_id: String,
    /// The public key (opaque to the relay).
    pub key: String,
}

/// One device of a user, as another device needs it to encrypt to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceBundle {
    /// The device's id (its channel key).
    pub device: DeviceId,
    /// Its long-term E2E identity key (Curve25519 for Olm).
    pub identity_key: String,
    /// Its signing key (Ed25519 for Olm), for fingerprints.
    pub signing_key: String,
    /// A one-time prekey, claimed for this caller alone and removed from the relay; `None` when the device
    /// has none left.
    pub one_time_key: Option<PreKey>,
    /// The device's fallback prekey, used when no one-time key is left; it is not removed.
    pub fallback_key: Option<PreKey>,
}

/// An invite or device-link token on the wire. Its `Debug` output is redacted and it is wiped when
/// dropped: it admits a device, so it must not end up in logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// The token's text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Token {
    fn from(text: String) -> Self {
        Token(text)
    }
}

impl From<&str> for Token {
    fn from(text: &str) -> Self {
        Token(text.to_owned())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A device and its public identity keys, as list_devices returns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceKeys {
    /// The device id (its channel key, hex).
    pub device: DeviceId,
    /// Its E2E identity key (Curve25519).
    pub identity_key: String,
    /// Its signing key (Ed25519).
    pub signing_key: String,
}

/// A visible user and whether any of their devices is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    /// The user.
    pub username: String,
    /// `true` while at least one of their devices has a channel open to the relay.
    pub online: bool,
}

/// One ciphertext for one recipient device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The recipient device.
    pub device: DeviceId,
    /// The ciphertext for that device alone.
    pub ciphertext: String,
}

/// Identifies a delivered message for its acknowledgment: the sending device, its message id and the
/// sequence number it was delivered under. The relay finds the message by the sequence number (its
/// queue's key) and deletes it only when the sender and message id match too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageRef {
    /// The device that sent the message.
    pub from_device: DeviceId,
    /// The sender's message id.
    pub message_id: String,
    /// This device's sequence number of the message (from its `deliver`).
    pub seq: u64,
}

/// A request from a device to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// register_device: binds the caller's channel key to `username` (creating the account on first use)
    /// with its E2E identity keys. Repeating it with the same values is a no-op.
    RegisterDevice {
        /// Request number, echoed in the reply.
        req: u64,
        /// The account name.
        username: String,
        /// The device's E2E identity key (Curve25519).
        identity_key: String,
        /// The device's signing key (Ed25519).
        signing_key: String,
        /// An invite or device-link token: needed for a new account when the relay is invite-only, and
        /// for a new device of an existing account (minted by one of its devices with link_device).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite: Option<Token>,
    },
    /// publish_prekeys: adds one-time prekeys and replaces the fallback prekey (when given).
    PublishPrekeys {
        /// Request number.
        req: u64,
        /// New one-time prekeys.
        one_time_keys: Vec<PreKey>,
        /// A new fallback prekey, replacing the previous one.
        fallback_key: Option<PreKey>,
    },
    /// fetch_bundle: the devices of `username`, each with one freshly claimed one-time key.
    FetchBundle {
        /// Request number.
        req: u64,
        /// Whose devices.
        username: String,
    },
    /// send: stores one ciphertext per recipient device; retried with the same `message_id`, it is stored
    /// once. Recipients may be devices of `to` and the sender's own other devices.
    Send {
        /// Request number.
        req: u64,
        /// Chosen by the sending device, unique among its messages (e.g. 128 random bits in hex).
        message_id: String,
        /// The recipient user.
        to: String,
        /// One ciphertext per recipient device.
        envelopes: Vec<Envelope>,
    },
    /// remove_device: unregisters a device of the caller's account (the caller itself when `device` is
    /// absent), with its prekeys and queued messages.
    RemoveDevice {
        /// Request number.
        req: u64,
        /// The device to remove; the caller when absent.
        #[serde(default)]
        device: Option<DeviceId>,
    },
    /// list_users: the users visible to the caller (see [`Reply::Users`]).
    ListUsers {
        /// Request number.
        req: u64,
    },
    /// list_devices: a user's devices and their identity keys, claiming no prekey (see
    /// [`Reply::Devices`]).
    ListDevices {
        /// Request number.
        req: u64,
        /// Whose devices.
        username: String,
    },
    /// count_prekeys: how many of the caller's one-time keys the relay still holds (see
    /// [`Reply::Prekeys`]), so a device knows when to publish more.
    CountPrekeys {
        /// Request number.
        req: u64,
    },
    /// link_device: a single-use token that lets one new device join the caller's account (see
    /// [`Reply::Link`]).
    LinkDevice {
        /// Request number.
        req: u64,
    },
    /// ping: heartbeat; answered with pong.
    Ping {
        /// Request number.
        req: u64,
    },
    /// ack: the caller has durably processed these delivered messages; the relay deletes them.
    Ack {
        /// Request number.
        req: u64,
        /// The acknowledged messages.
        messages: Vec<MessageRef>,
    },
}

impl Request {
    /// The request number.
    pub fn req(&self) -> u64 {
        match self {
            Request::RegisterDevice { req, .. }
            | Request::PublishPrekeys { req, .. }
            | Request::FetchBundle { req, .. }
            | Request::Send { req, .. }
            | Request::RemoveDevice { req, .. }
            | Request::Ping { req }
            | Request::ListUsers { req }
            | Request::ListDevices { req, .. }
            | Request::LinkDevice { req }
            | Request::CountPrekeys { req }
            | Request::Ack { req, .. } => *req,
        }
    }
}

/// Machine-readable error codes of [`Reply::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame did not decode as a request.
    Malformed,
    /// The caller's channel key is not a registered device (register first).
    NotRegistered,
    /// The username is unknown.
    UnknownUser,
    /// A recipient device is not a device of the recipient or of the sender.
    UnknownDevice,
    /// The device is already registered to another account.
    DeviceTaken,
    /// A field is empty, too long or otherwise invalid.
    Invalid,
    /// The connection exceeded its request rate; slow down.
    RateLimited,
    /// A storage failure on the relay; retry later.
    Internal,
    /// The registration needs a valid, unused invite or device-link token.
    InviteRequired,
    /// A recipient device has the most queued messages allowed; retry later.
    QueueFull,
}

/// A message from the relay to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// The request `req` succeeded (register_device, publish_prekeys, remove_device, ack).
    Ok {
        /// The request number.
        req: u64,
    },
    /// The answer to list_users: the caller's own account and the users it has a conversation with (a
    /// message sent either way through this relay). There is no enumeration of other users.
    Users {
        /// The request number.
        req: u64,
        /// The visible users, by name.
        users: Vec<UserPresence>,
    },
    /// The answer to ping.
    Pong {
        /// The request number.
        req: u64,
    },
    /// The answer to fetch_bundle.
    Bundle {
        /// The request number.
        req: u64,
        /// The user.
        username: String,
        /// Their devices.
        devices: Vec<DeviceBundle>,
    },
    /// The answer to send, given only once every envelope is durable.
    Sent {
        /// The request number.
        req: u64,
        /// The message id.
        message_id: String,
        /// `true` when this message id had been stored before (a retry): nothing new was stored.
        duplicate: bool,
    },
    /// deliver: a stored message for this device, pushed in sequence order, until acknowledged.
    Deliver {
        /// This device's sequence number of the message (increasing).
        seq: u64,
        /// The sending user.
        from_user: String,
        /// The sending device.
        from_device: DeviceId,
        /// The sender's message id.
        message_id: String,
        /// The ciphertext for this device.
        ciphertext: String,
        /// When the relay stored it (seconds since the Unix epoch).
        stored_at: i64,
    },
    /// list_devices: the user's devices (no prekeys are claimed).
    Devices {
        /// Request number.
        req: u64,
        /// Whose devices.
        username: String,
        /// Device id and identity keys of each device.
        devices: Vec<DeviceKeys>,
    },
    /// count_prekeys: the caller's unclaimed one-time keys on the relay.
    Prekeys {
        /// Request number.
        req: u64,
        /// How many are left.
        one_time_keys: u64,
    },
    /// link_device: the token a new device of this account presents in register_device's `invite`.
    Link {
        /// Request number.
        req: u64,
        /// The single-use token (the relay keeps only its SHA-256).
        token: Token,
        /// When it stops working (seconds since the Unix epoch).
        expires_at: i64,
    },
    /// The request failed (`req` is absent when the request did not decode).
    Error {
        /// The request number, when known.
        req: Option<u64>,
        /// What went wrong.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
    },
}
