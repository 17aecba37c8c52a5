//! Durable relay state behind the [`Store`] trait: accounts, devices, prekeys and queued messages.
//!
//! The schema (see [`sqlite`]) is plain SQL that PostgreSQL accepts as well, so a second backend can
//! implement the same trait over the same tables. Every method is one transaction.
//!
//! Delivery rules the trait guarantees:
//! * each queued message gets its recipient device's next sequence number (strictly increasing, never
//!   reused, even after deletions);
//! * a message is deleted only by [`Store::ack`];
//! * [`Store::enqueue`] with a `(sender device, message id)` pair seen before stores nothing, even after
//!   the first copy was acknowledged and deleted.

mod admission;
mod batch;
mod pending;
mod send;
pub mod sqlite;

use std::future::Future;

use crate::protocol::{DeviceBundle, DeviceId, DeviceKeys, Envelope, MessageRef, PreKey};

pub use sqlite::SqliteStore;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The device is registered to another account.
    #[error("device {device} belongs to another account")]
    DeviceTaken {
        /// The device.
        device: DeviceId,
    },
    /// The device belongs to another account than the caller's.
    #[error("device {device} is not a device of your account")]
    NotYourDevice {
        /// The device.
        device: DeviceId,
    },
    /// The device is not registered.
    #[error("device {device} is not registered")]
    UnknownDevice {
        /// The device.
        device: DeviceId,
    },
    /// The user does not exist.
    #[error("user {username} does not exist")]
    UnknownUser {
        /// The user.
        username: String,
    },
    /// A recipient device belongs neither to the recipient nor to the sender's account.
    #[error("device {device} is not a device of {username} or of the sender")]
    NotARecipient {
        /// The device.
        device: DeviceId,
        /// The recipient user.
        username: String,
    },
    /// The same device appears in two envelopes of one send.
    #[error("device {device} appears in more than one envelope")]
    RepeatedDevice {
        /// The device.
        device: DeviceId,
    },
    /// A recipient device already has the most queued messages allowed.
    #[error("device {device} has {limit} messages waiting; it must acknowledge some first")]
    QueueFull {
        /// The device.
        device: DeviceId,
        /// The limit.
        limit: u64,
    },
    /// A publish would leave the device more unclaimed one-time keys than the limit.
    #[error("at most {limit} unclaimed one-time keys per device")]
    TooManyPrekeys {
        /// The limit.
        limit: usize,
    },
    /// The account already has the most devices allowed ([`MAX_DEVICES_PER_ACCOUNT`]).
    #[error("{username} already has {limit} devices, the most allowed; remove one first")]
    TooManyDevices {
        /// The account.
        username: String,
        /// The limit.
        limit: usize,
    },
    /// The registration needs a valid invite or device-link token.
    #[error("{reason}")]
    InviteRequired {
        /// What was missing.
        reason: String,
    },
    /// The database failed (I/O, corruption, a full disk).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device id (its channel key).
    pub device: DeviceId,
    /// Its account.
    pub username: String,
    /// Its E2E identity key.
    pub identity_key: String,
    /// Its signing key.
    pub signing_key: String,
    /// The highest sequence number it has acknowledged (0 before any).
    pub last_acked_seq: u64,
}

/// A queued message for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The recipient device's sequence number.
    pub seq: u64,
    /// The sending user.
    pub from_user: String,
    /// The sending device.
    pub from_device: DeviceId,
    /// The sender's message id.
    pub message_id: String,
    /// The ciphertext, exactly as the sender gave it.
    pub ciphertext: String,
    /// When it was stored (seconds since the Unix epoch).
    pub stored_at: i64,
}

/// The result of [`Store::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored (committed).
    Stored {
        /// Each recipient device with the sequence number its copy got.
        copies: Vec<(DeviceId, u64)>,
        /// The sender's account, as the copies record it.
        from_user: String,
        /// When the copies were stored (seconds since the Unix epoch), as they record it.
        stored_at: i64,
    },
    /// This message id was stored before; nothing was stored now.
    Duplicate,
}

impl Enqueued {
    /// The stored copies (device and sequence number); none for a duplicate.
    pub fn copies(&self) -> &[(DeviceId, u64)] {
        match self {
            Enqueued::Stored { copies, .. } => copies,
            Enqueued::Duplicate => &[],
        }
    }
}

/// Limits of a store.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Most messages queued (stored, not yet acknowledged) for one device (default 10,000). A send
    /// that would go beyond it for any of its devices stores nothing ([`StoreError::QueueFull`]).
    pub max_queued_per_device: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_queued_per_device: 10_000,
        }
    }
}

/// Most unclaimed one-time keys the relay keeps for one device.
pub const MAX_STORED_ONE_TIME_KEYS: usize = 500;

/// Most devices of one account: a registration of one more is refused
/// ([`StoreError::TooManyDevices`]). It bounds list_devices' and fetch_bundle's replies (16 devices of
/// keys up to 256 bytes each are a few KiB).
pub const MAX_DEVICES_PER_ACCOUNT: usize = 16;

/// Most outstanding (unexpired, unused) device-link tokens of one account: minting one more replaces
/// the oldest, which stops working (so link_device cannot fill the store).
pub const MAX_LINK_TOKENS_PER_ACCOUNT: usize = 8;

/// Most contacts list_users lists besides the caller's own account (the first ones by name): other
/// accounts can make themselves contacts by sending one message each, and the reply must stay well under
/// a frame (1,000 names of at most 64 bytes, escaped, are under 200 KiB).
pub const MAX_LISTED_CONTACTS: usize = 1000;

/// A device registration: who and with which public keys.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    /// The account name.
    pub username: &'a str,
    /// The device id (channel key, hex).
    pub device: &'a str,
    /// The device's E2E identity key.
    pub identity_key: &'a str,
    /// The device's signing key.
    pub signing_key: &'a str,
}

/// What a registration brings past the policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admission<'a> {
    /// The relay admits new accounts only with an invite token.
    pub invite_only: bool,
    /// SHA-256 (hex) of the token the device presented, if any.
    pub token_hash: Option<&'a str>,
}

/// The relay's durable state. Implementations must make each method atomic and durable before it
/// returns.
pub trait Store: Send + Sync + 'static {
    /// Registers `registration.device` for `registration.username` (creating the account on first use)
    /// under the admission rules: a new device of an account with devices needs that account's link
    /// token; a new account needs an invite when `admission.invite_only`; a token is consumed in the
    /// same transaction. A device bound to another account: [`StoreError::DeviceTaken`]; the same
    /// device re-registering replaces its keys.
    fn register_device(
        &self,
        registration: &Registration<'_>,
        admission: &Admission<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a single-use token by its hash: an invite for a new account (`username` None), or a
    /// device-link token for a new device of `username`. It stops working at `expires_at`. An account
    /// keeps at most [`MAX_LINK_TOKENS_PER_ACCOUNT`] link tokens: a new one replaces the oldest.
    fn create_invite(
        &self,
        token_hash: &str,
        username: Option<&str>,
        expires_at: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many unclaimed one-time keys `device` has.
    fn count_one_time_keys(
        &self,
        device: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// `username`'s devices with their public identity keys; claims no prekey.
    fn list_devices(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Vec<DeviceKeys>, StoreError>> + Send;

    /// The device's record, if registered.
    fn device(
        &self,
        device: &str,
    ) -> impl Future<Output = Result<Option<DeviceRecord>, StoreError>> + Send;

    /// Adds one-time prekeys (ignoring ids the device already published) and replaces the fallback key.
    /// A device holds at most [`MAX_STORED_ONE_TIME_KEYS`] unclaimed one-time keys: a publish that would
    /// exceed it stores nothing ([`StoreError::TooManyPrekeys`]).
    fn publish_prekeys(
        &self,
        device: &str,
        one_time: &[PreKey],
        fallback: Option<&PreKey>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The devices of `username`, each with one one-time key removed from the store (claimed) when any is
    /// left, and its fallback key.
    fn fetch_bundles(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Vec<DeviceBundle>, StoreError>> + Send;

    /// Stores one copy per envelope, each under its device's next sequence number, unless `(sender,
    /// message_id)` was stored before. Every envelope's device must belong to `to` or to the sender's
    /// account; otherwise nothing is stored.
    fn enqueue(
        &self,
        sender: &str,
        message_id: &str,
        to: &str,
        envelopes: &[Envelope],
    ) -> impl Future<Output = Result<Enqueued, StoreError>> + Send;

    /// Up to `limit` queued messages of `device` with a sequence number above `after`, in order.
    fn pending(
        &self,
        device: &str,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredMessage>, StoreError>> + Send;

    /// [`Store::pending`] under a byte budget: up to `limit` messages, stopping before their ciphertext
    /// would pass `max_bytes` (at least one message always); and whether more may follow (the batch
    /// stopped at `limit` or at the budget). The default reads with [`Store::pending`] and cuts.
    fn pending_within(
        &self,
        device: &str,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> impl Future<Output = Result<(Vec<StoredMessage>, bool), StoreError>> + Send {
        async move {
            let mut messages = self.pending(device, after, limit).await?;
            let full = messages.len() >= usize::try_from(limit).unwrap_or(usize::MAX);
            let (mut bytes, mut keep) = (0usize, 0usize);
            for message in &messages {
                let n = message.ciphertext.len();
                if keep > 0 && bytes.saturating_add(n) > max_bytes {
                    break;
                }
                bytes = bytes.saturating_add(n);
                keep += 1;
            }
            let cut = keep < messages.len();
            messages.truncate(keep);
            Ok((messages, full || cut))
        }
    }

    /// Deletes the acknowledged messages of `device`; returns how many were deleted. Unknown references
    /// are ignored (an ack may be repeated).
    fn ack(
        &self,
        device: &str,
        messages: &[MessageRef],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Removes `device`, which must belong to the same account as `caller` (or be the caller), with its
    /// prekeys and queued messages. Returns whether it existed.
    fn remove_device(
        &self,
        caller: &str,
        device: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes queued messages stored before `cutoff` (seconds since the Unix epoch) — undeliverable ones
    /// past their TTL — and the idempotency records of sends older than it. Returns the messages deleted.
    fn expire(&self, cutoff: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The users `device`'s account may see, each with their devices: the account itself and every user
    /// it has exchanged a message with (in either direction), at most [`MAX_LISTED_CONTACTS`] of those
    /// (the first by name). Sorted by name.
    fn visible_users(
        &self,
        device: &str,
    ) -> impl Future<Output = Result<Vec<(String, Vec<DeviceId>)>, StoreError>> + Send;
}
