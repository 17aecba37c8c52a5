//! A minimal relay client over one channel: numbered requests and their replies, with deliveries that
//! arrive in between kept in order for [`RelayClient::next_delivery`].
//!
//! It holds no keys and does no encryption; the end-to-end layer (Olm) sits on top of it.
//!
//! The relay pushes a device's whole queue as fast as the channel takes it, and a request's reply comes
//! after whatever was pushed before it, so the deliveries kept meanwhile are bounded:
//! [`MAX_BUFFERED_DELIVERIES`] and [`MAX_BUFFERED_BYTES`] (see [`RelayClient::set_delivery_buffer`]).
//! Beyond that, deliveries are dropped **unacknowledged** — the relay keeps them — and every later one on
//! this connection too, so that order is kept. Once the kept ones are taken, [`RelayClient::next_delivery`]
//! fails with [`ClientError::DeliveriesDropped`]: reconnect, and the relay delivers the dropped ones
//! again from the first unacknowledged. Nothing is lost, and memory stays bounded whatever the relay
//! sends.

use std::collections::VecDeque;

use tessera_channel::{Channel, ChannelError};
use zeroize::Zeroizing;

use crate::protocol::codec::{DecodeError, decode_reply, encode_request};
use crate::protocol::{
    DeviceBundle, DeviceId, DeviceKeys, Envelope, ErrorCode, MessageRef, PreKey, Reply, Request,
    Token, UserPresence,
};

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The channel failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The relay closed the channel.
    #[error("the relay closed the channel")]
    Closed,
    /// The relay sent something that is not a reply.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The relay refused the request.
    #[error("relay refused the request ({code:?}): {message}")]
    Refused {
        /// The relay's error code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// A reply of the wrong kind for the request.
    #[error("unexpected reply from the relay: {0}")]
    Unexpected(String),
    /// The relay pushed more deliveries than this client buffers; those beyond were dropped without
    /// acknowledgment (the relay still holds them). Reconnect to receive them.
    #[error(
        "the relay pushed more than the client buffers: {dropped} deliveries left unacknowledged; reconnect to receive them"
    )]
    DeliveriesDropped {
        /// How many were dropped.
        dropped: u64,
    },
}

/// How many pushed deliveries a [`RelayClient`] keeps before they are taken (the relay pushes batches
/// of 100; an application takes one at a time).
pub const MAX_BUFFERED_DELIVERIES: usize = 1_000;

/// How many bytes of pushed deliveries (ciphertext and names) a [`RelayClient`] keeps before they are
/// taken. One delivery is always kept when the buffer is empty, whatever its size.
pub const MAX_BUFFERED_BYTES: usize = 16 << 20;

/// The reply's request number (`None` for a pushed delivery, or an error about an undecodable request).
fn reply_req(reply: &Reply) -> Option<u64> {
    match reply {
        Reply::Ok { req }
        | Reply::Users { req, .. }
        | Reply::Pong { req }
        | Reply::Bundle { req, .. }
        | Reply::Sent { req, .. }
        | Reply::Devices { req, .. }
        | Reply::Prekeys { req, .. }
        | Reply::Link { req, .. } => Some(*req),
        Reply::Error { req, .. } => *req,
        Reply::Deliver { .. } => None,
    }
}

/// A new message id: 12 hex digits of the Unix time in milliseconds, then 20 random hex digits (80
/// bits). Any string unique per sending device works as a message id; starting with the time lets the
/// relay's idempotency records (keyed by message id, then sender) grow at their end instead of landing on
/// a page of their own per send.
pub fn new_message_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let random = rand::random::<u128>() & ((1u128 << 80) - 1);
    format!("{:012x}{random:020x}", millis & 0xffff_ffff_ffff)
}

/// A message the relay delivered to this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// This device's sequence number of the message.
    pub seq: u64,
    /// The sending user.
    pub from_user: String,
    /// The sending device.
    pub from_device: DeviceId,
    /// The sender's message id.
    pub message_id: String,
    /// The ciphertext for this device.
    pub ciphertext: String,
}

impl Delivery {
    /// The bytes it holds (ciphertext and names), as counted against [`MAX_BUFFERED_BYTES`].
    pub fn size(&self) -> usize {
        self.ciphertext.len()
            + self.from_user.len()
            + self.from_device.len()
            + self.message_id.len()
    }

    /// The reference that acknowledges this delivery.
    pub fn reference(&self) -> MessageRef {
        MessageRef {
            from_device: self.from_device.clone(),
            message_id: self.message_id.clone(),
            seq: self.seq,
        }
    }
}

/// A device's connection to the relay.
#[derive(Debug)]
pub struct RelayClient {
    channel: Channel,
    next_req: u64,
    deliveries: VecDeque<Delivery>,
    /// The bytes held in `deliveries` (see [`Delivery::size`]).
    buffered_bytes: usize,
    /// The bounds on `deliveries`: count and bytes.
    buffer_limits: (usize, usize),
    /// Deliveries dropped unacknowledged on this connection because the buffer was full.
    dropped: u64,
    /// Every frame received from the relay, when recording (see [`RelayClient::record`]).
    transcript: Option<Transcript>,
}

/// A bounded record of the frames received from the relay.
#[derive(Debug, Default)]
struct Transcript {
    frames: Vec<Vec<u8>>,
    bytes: usize,
    limit: usize,
}

impl RelayClient {
    /// Wraps an established channel to the relay.
    pub fn new(channel: Channel) -> Self {
        RelayClient {
            channel,
            next_req: 1,
            deliveries: VecDeque::new(),
            buffered_bytes: 0,
            buffer_limits: (MAX_BUFFERED_DELIVERIES, MAX_BUFFERED_BYTES),
            dropped: 0,
            transcript: None,
        }
    }

    /// Sets the bounds on the deliveries kept until taken (count and bytes; at least one delivery is
    /// always kept). The defaults are [`MAX_BUFFERED_DELIVERIES`] and [`MAX_BUFFERED_BYTES`].
    pub fn set_delivery_buffer(&mut self, count: usize, bytes: usize) {
        self.buffer_limits = (count.max(1), bytes);
    }

    /// Starts recording every frame received from the relay, up to `limit_bytes` in total (later frames
    /// are not kept): for audits of what the relay sends, e.g. that it never carries plaintext.
    pub fn record(&mut self, limit_bytes: usize) {
        self.transcript = Some(Transcript {
            limit: limit_bytes,
            ..Transcript::default()
        });
    }

    /// The frames recorded since [`RelayClient::record`], as the relay sent them (after the channel's
    /// decryption).
    pub fn recorded(&self) -> &[Vec<u8>] {
        self.transcript.as_ref().map_or(&[], |t| &t.frames)
    }

    fn tap(&mut self, bytes: &[u8]) {
        if let Some(transcript) = &mut self.transcript
            && transcript.bytes + bytes.len() <= transcript.limit
        {
            transcript.bytes += bytes.len();
            transcript.frames.push(bytes.to_vec());
        }
    }

    /// Queues a pushed delivery for [`RelayClient::next_delivery`] (other replies are ignored here), or
    /// drops it unacknowledged when the buffer is full or something was dropped before (order).
    fn queue_delivery(&mut self, reply: Reply) {
        if let Reply::Deliver {
            seq,
            from_user,
            from_device,
            message_id,
            ciphertext,
            ..
        } = reply
        {
            let delivery = Delivery {
                seq,
                from_user,
                from_device,
                message_id,
                ciphertext,
            };
            let (count, bytes) = self.buffer_limits;
            let size = delivery.size();
            let full = !self.deliveries.is_empty()
                && (self.deliveries.len() >= count
                    || self.buffered_bytes.saturating_add(size) > bytes);
            if self.dropped > 0 || full {
                if self.dropped == 0 {
                    tracing::warn!(
                        seq,
                        "delivery buffer full: dropping deliveries unacknowledged until reconnect"
                    );
                }
                self.dropped += 1;
                return;
            }
            self.buffered_bytes += size;
            self.deliveries.push_back(delivery);
        }
    }

    /// The first kept delivery; [`ClientError::DeliveriesDropped`] once they are all taken and some
    /// were dropped.
    fn take_delivery(&mut self) -> Result<Option<Delivery>, ClientError> {
        match self.deliveries.pop_front() {
            Some(delivery) => {
                self.buffered_bytes = self.buffered_bytes.saturating_sub(delivery.size());
                Ok(Some(delivery))
            }
            None if self.dropped > 0 => Err(ClientError::DeliveriesDropped {
                dropped: self.dropped,
            }),
            None => Ok(None),
        }
    }

    async fn receive(&mut self) -> Result<Reply, ClientError> {
        let bytes = self.channel.recv().await?.ok_or(ClientError::Closed)?;
        self.tap(&bytes);
        Ok(decode_reply(&bytes)?)
    }

    /// Sends a request and waits for its reply, matched by `req`: deliveries that arrive meanwhile are
    /// queued, and replies to earlier requests (a heartbeat's late `pong`) are skipped. A reply to a
    /// request not sent yet is a protocol violation.
    async fn call(&mut self, make: impl FnOnce(u64) -> Request) -> Result<Reply, ClientError> {
        let req = self.next_req;
        self.next_req += 1;
        self.channel.send(encode_request(&make(req))).await?;
        loop {
            let reply = self.receive().await?;
            match reply_req(&reply) {
                _ if matches!(reply, Reply::Deliver { .. }) => self.queue_delivery(reply),
                Some(r) if r == req => {
                    return match reply {
                        Reply::Error { code, message, .. } => {
                            Err(ClientError::Refused { code, message })
                        }
                        reply => Ok(reply),
                    };
                }
                Some(r) if r < req => tracing::debug!(req = r, "skipped a late reply"),
                Some(_) => return Err(ClientError::Unexpected(format!("{reply:?}"))),
                None => {
                    return match reply {
                        Reply::Error { code, message, .. } => {
                            Err(ClientError::Refused { code, message })
                        }
                        other => Err(ClientError::Unexpected(format!("{other:?}"))),
                    };
                }
            }
        }
    }

    /// Whether `reply` answers a request sent before (a heartbeat's `pong`, or its refusal, that came
    /// late): skipped. Every other request got its reply in [`RelayClient::call`].
    fn is_late(&self, reply: &Reply) -> bool {
        reply_req(reply).is_some_and(|r| r < self.next_req)
    }

    /// A frame that answers nothing, while listening: the relay's own refusal (`req` null: this device
    /// was removed, or has too many connections open) says why; anything else is unexpected.
    fn unsolicited(reply: Reply) -> ClientError {
        match reply {
            Reply::Error {
                req: None,
                code,
                message,
            } => ClientError::Refused { code, message },
            other => ClientError::Unexpected(format!("{other:?}")),
        }
    }

    fn expect_ok(reply: Reply) -> Result<(), ClientError> {
        match reply {
            Reply::Ok { .. } => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// register_device: binds this channel key to `username` with the device's E2E identity keys.
    pub async fn register(
        &mut self,
        username: &str,
        identity_key: &str,
        signing_key: &str,
    ) -> Result<(), ClientError> {
        self.register_with(username, identity_key, signing_key, None)
            .await
    }

    /// register_device with an invite token (a new account on an invite-only relay) or a device-link
    /// token (a new device of an existing account).
    pub async fn register_with(
        &mut self,
        username: &str,
        identity_key: &str,
        signing_key: &str,
        invite: Option<&str>,
    ) -> Result<(), ClientError> {
        let reply = self
            .call(|req| Request::RegisterDevice {
                req,
                username: username.into(),
                identity_key: identity_key.into(),
                signing_key: signing_key.into(),
                invite: invite.map(Token::from),
            })
            .await?;
        Self::expect_ok(reply)
    }

    /// list_devices: `username`'s devices and identity keys (claims no prekey).
    pub async fn list_devices(&mut self, username: &str) -> Result<Vec<DeviceKeys>, ClientError> {
        match self
            .call(|req| Request::ListDevices {
                req,
                username: username.into(),
            })
            .await?
        {
            Reply::Devices { devices, .. } => Ok(devices),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// count_prekeys: how many of this device's one-time keys the relay still holds.
    pub async fn count_prekeys(&mut self) -> Result<u64, ClientError> {
        match self.call(|req| Request::CountPrekeys { req }).await? {
            Reply::Prekeys { one_time_keys, .. } => Ok(one_time_keys),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// link_device: a single-use token for one new device of this account, and its expiry time.
    pub async fn link_device(&mut self) -> Result<(Zeroizing<String>, i64), ClientError> {
        match self.call(|req| Request::LinkDevice { req }).await? {
            Reply::Link {
                token, expires_at, ..
            } => Ok((Zeroizing::new(token.expose().to_owned()), expires_at)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// publish_prekeys.
    pub async fn publish_prekeys(
        &mut self,
        one_time_keys: Vec<PreKey>,
        fallback_key: Option<PreKey>,
    ) -> Result<(), ClientError> {
        let reply = self
            .call(|req| Request::PublishPrekeys {
                req,
                one_time_keys,
                fallback_key,
            })
            .await?;
        Self::expect_ok(reply)
    }

    /// fetch_bundle: `username`'s devices, each with a claimed one-time key when one is left.
    pub async fn fetch_bundle(&mut self, username: &str) -> Result<Vec<DeviceBundle>, ClientError> {
        match self
            .call(|req| Request::FetchBundle {
                req,
                username: username.into(),
            })
            .await?
        {
            Reply::Bundle { devices, .. } => Ok(devices),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// send: returns once the relay has stored every envelope durably; `Ok(true)` if it had already
    /// stored this message id (a retry).
    pub async fn send(
        &mut self,
        message_id: &str,
        to: &str,
        envelopes: Vec<Envelope>,
    ) -> Result<bool, ClientError> {
        let reply = self
            .call(|req| Request::Send {
                req,
                message_id: message_id.into(),
                to: to.into(),
                envelopes,
            })
            .await?;
        match reply {
            Reply::Sent { duplicate, .. } => Ok(duplicate),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// list_users: the users visible to this account, with presence.
    pub async fn list_users(&mut self) -> Result<Vec<UserPresence>, ClientError> {
        match self.call(|req| Request::ListUsers { req }).await? {
            Reply::Users { users, .. } => Ok(users),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// ping: a heartbeat round trip.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        match self.call(|req| Request::Ping { req }).await? {
            Reply::Pong { .. } => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// remove_device: removes `device` of this account, or this device when `None`.
    pub async fn remove_device(&mut self, device: Option<DeviceId>) -> Result<(), ClientError> {
        let reply = self
            .call(|req| Request::RemoveDevice { req, device })
            .await?;
        Self::expect_ok(reply)
    }

    /// ack: the relay deletes these messages.
    pub async fn ack(&mut self, messages: Vec<MessageRef>) -> Result<(), ClientError> {
        let reply = self.call(|req| Request::Ack { req, messages }).await?;
        Self::expect_ok(reply)
    }

    /// The next delivered message, waiting for the relay to push one. Fails with
    /// [`ClientError::DeliveriesDropped`] when the buffer overflowed on this connection and the kept
    /// deliveries are all taken (reconnect).
    pub async fn next_delivery(&mut self) -> Result<Delivery, ClientError> {
        loop {
            if let Some(delivery) = self.take_delivery()? {
                return Ok(delivery);
            }
            match self.receive().await? {
                reply @ Reply::Deliver { .. } => self.queue_delivery(reply),
                late if self.is_late(&late) => {}
                other => return Err(Self::unsolicited(other)),
            }
        }
    }

    /// [`RelayClient::next_delivery`], sending a `ping` whenever nothing arrived for `every` (its `pong`
    /// is consumed here): a listening client stays within the relay's idle timeout.
    pub async fn next_delivery_with_heartbeat(
        &mut self,
        every: std::time::Duration,
    ) -> Result<Delivery, ClientError> {
        loop {
            if let Some(delivery) = self.take_delivery()? {
                return Ok(delivery);
            }
            match tokio::time::timeout(every, self.channel.recv()).await {
                Err(_) => {
                    let req = self.next_req;
                    self.next_req += 1;
                    self.channel
                        .send(encode_request(&Request::Ping { req }))
                        .await?;
                }
                Ok(received) => {
                    let bytes = received?.ok_or(ClientError::Closed)?;
                    self.tap(&bytes);
                    match decode_reply(&bytes)? {
                        reply @ Reply::Deliver { .. } => self.queue_delivery(reply),
                        late if self.is_late(&late) => {}
                        other => return Err(Self::unsolicited(other)),
                    }
                }
            }
        }
    }

    /// Closes the channel normally.
    pub async fn close(self) {
        self.channel.close().await;
    }
}
