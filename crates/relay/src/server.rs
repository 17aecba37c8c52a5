//! The relay server: one task per channel, on the channel's session.
//!
//! A connection's device is its channel peer key (proven by the Noise handshake). Once the device is
//! registered (at connect, or by register_device on this connection), the connection delivers every
//! queued message in sequence order, starting after sequence 0 — that is, every message not yet
//! acknowledged — and then pushes new ones as they are stored. Delivery is at-least-once: a reconnecting
//! device receives again whatever it had not acknowledged; acknowledgments delete.
//!
//! Live push: each connected device has a `watch` cell holding its latest committed copy (sequence
//! number and its encoded `deliver` frame); a send updates it after its transaction commits, and every
//! connection of that device wakes. A connection whose cursor is just below that copy sends the frame as
//! it is (no store read); one that is further behind (it was catching up, or missed a commit because
//! several came at once) reads the store from its cursor. Sequence numbers are assigned in commit order,
//! so the copy right after the cursor has no earlier undelivered one; a wake-up can never be lost between
//! a read and a wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tessera_channel::{Channel, ChannelWriter, Listener};
use tokio::sync::watch;

use crate::limit::TokenBucket;
use crate::metrics::{Closed, RelayMetrics};
use crate::protocol::codec::{decode_request, encode_reply, salvage_req};
use crate::protocol::{DeviceId, ErrorCode, Reply, Request, UserPresence};
use crate::store::{Admission, Enqueued, Registration, Store, StoreError};

/// Limits the relay enforces on requests.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Queued messages read from the store per delivery batch (default 100).
    pub delivery_batch: u32,
    /// Longest username, in bytes (default 64).
    pub max_username: usize,
    /// Longest key, key id or message id, in bytes (default 256).
    pub max_field: usize,
    /// Most envelopes in one send (default 64).
    pub max_envelopes: usize,
    /// Most one-time prekeys in one publish (default 100).
    pub max_prekeys: usize,
    /// Consecutive malformed frames after which the relay closes the channel (default 8); each one
    /// before that gets an error reply.
    pub max_malformed: u32,
    /// Requests per second a connection may sustain (default 50).
    pub requests_per_second: f64,
    /// Requests a connection may send at once before the rate applies (default 100).
    pub request_burst: u32,
    /// Most messages acknowledged in one ack (default 1,000).
    pub max_acks: usize,
    /// How long an undelivered message is kept, and how long a message id is remembered for idempotent
    /// retries (default 30 days). Applied by [`Relay::expire`].
    pub message_ttl: std::time::Duration,
    /// Registration policy: when true a new account needs an invite token (see [`crate::invite`]);
    /// when false (default) anyone may create an account. A new device of an existing account always
    /// needs a link token from one of its devices.
    pub invite_only: bool,
    /// How long a device-link token stays valid (default 10 minutes).
    pub link_ttl: std::time::Duration,
    /// A connection that sends no request (a `ping` counts) for this long is closed (default 120 s).
    /// Clients that only listen send `ping` well within it.
    pub idle_timeout: std::time::Duration,
    /// Consecutive `rate_limited` replies after which the relay closes the connection (default 32).
    pub max_rate_limited: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            delivery_batch: 100,
            max_username: 64,
            max_field: 256,
            max_envelopes: 64,
            max_prekeys: 100,
            max_acks: 1000,
            max_malformed: 8,
            requests_per_second: 50.0,
            request_burst: 100,
            message_ttl: std::time::Duration::from_secs(30 * 24 * 3600),
            invite_only: false,
            link_ttl: std::time::Duration::from_secs(600),
            idle_timeout: std::time::Duration::from_secs(120),
            max_rate_limited: 32,
        }
    }
}

/// The relay: a store, limits, and the live-push cells of connected devices. Cheap to clone.
pub struct Relay<S> {
    inner: Arc<Inner<S>>,
}

/// The latest committed copy for a device: its sequence number and, when the device had a connection
/// at the time, its encoded `deliver` frame.
#[derive(Debug, Clone, Default)]
struct Pushed {
    seq: u64,
    frame: Option<Arc<[u8]>>,
}

struct Inner<S> {
    store: S,
    config: RelayConfig,
    /// Live-push cells of connected devices (removed when their last connection ends).
    wake: Mutex<HashMap<DeviceId, watch::Sender<Pushed>>>,
    /// Open channels per device, for presence.
    online: Mutex<HashMap<DeviceId, usize>>,
    metrics: RelayMetrics,
    /// Expiry passes completed by [`Relay::spawn_expiry`] tasks.
    expiry_passes: watch::Sender<u64>,
}

/// Counts a device's channel as online while it lives.
struct OnlineGuard<S> {
    relay: Relay<S>,
    device: DeviceId,
}

impl<S> Drop for OnlineGuard<S> {
    fn drop(&mut self) {
        let mut online = self
            .relay
            .inner
            .online
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = online.get_mut(&self.device) {
            *count -= 1;
            if *count == 0 {
                online.remove(&self.device);
            }
        }
    }
}

impl<S> Clone for Relay<S> {
    fn clone(&self) -> Self {
        Relay {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> std::fmt::Debug for Relay<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What went wrong with a request: the reply's code and text.
struct Refusal(ErrorCode, String);

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        let code = match &error {
            StoreError::DeviceTaken { .. } => ErrorCode::DeviceTaken,
            StoreError::InviteRequired { .. } => ErrorCode::InviteRequired,
            StoreError::TooManyPrekeys { .. } | StoreError::RepeatedDevice { .. } => {
                ErrorCode::Invalid
            }
            StoreError::QueueFull { .. } => ErrorCode::QueueFull,
            StoreError::UnknownDevice { .. } => ErrorCode::NotRegistered,
            StoreError::UnknownUser { .. } => ErrorCode::UnknownUser,
            StoreError::NotARecipient { .. } | StoreError::NotYourDevice { .. } => {
                ErrorCode::UnknownDevice
            }
            StoreError::Database(_) => {
                tracing::error!(%error, "relay store failed");
                return Refusal(ErrorCode::Internal, "storage failure; retry later".into());
            }
        };
        Refusal(code, error.to_string())
    }
}

impl<S: Store> Relay<S> {
    /// A relay over `store`.
    pub fn new(store: S, config: RelayConfig) -> Self {
        Relay {
            inner: Arc::new(Inner {
                store,
                config,
                wake: Mutex::new(HashMap::new()),
                online: Mutex::new(HashMap::new()),
                metrics: RelayMetrics::new(),
                expiry_passes: watch::channel(0).0,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Accepts channels until the listener ends, serving each on a task of its channel's session.
    pub async fn run(self, mut listener: Listener) {
        while let Some(channel) = listener.accept().await {
            let session = channel.session().clone();
            let relay = self.clone();
            if let Err(error) = session.spawn(async move { relay.serve_channel(channel).await }) {
                tracing::debug!(%error, "channel ended before it could be served");
            }
        }
    }

    /// Deletes what has outlived [`RelayConfig::message_ttl`] as of `now` (seconds since the Unix
    /// epoch); returns how many queued messages expired. Call it periodically.
    pub async fn expire(&self, now: i64) -> Result<u64, StoreError> {
        let ttl = i64::try_from(self.inner.config.message_ttl.as_secs()).unwrap_or(i64::MAX);
        self.inner.store.expire(now.saturating_sub(ttl)).await
    }

    /// How many expiry passes [`Relay::spawn_expiry`] tasks have completed (successful ones), to wait
    /// for one: the first pass runs as soon as the task starts.
    pub fn expiry_passes(&self) -> watch::Receiver<u64> {
        self.inner.expiry_passes.subscribe()
    }

    /// Spawns a task that calls [`Relay::expire`] now and then every `every` until aborted.
    pub fn spawn_expiry(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let relay = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                match relay.expire(now).await {
                    Ok(expired) => {
                        if expired > 0 {
                            tracing::info!(expired, "expired undelivered messages");
                        }
                        relay.inner.metrics.expired.increment(expired);
                        relay.inner.expiry_passes.send_modify(|passes| *passes += 1);
                    }
                    Err(error) => tracing::warn!(%error, "expiry failed"),
                }
            }
        })
    }

    fn subscribe(&self, device: &str) -> watch::Receiver<Pushed> {
        let mut cells = self
            .inner
            .wake
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cells
            .entry(device.to_owned())
            .or_insert_with(|| watch::channel(Pushed::default()).0)
            .subscribe()
    }

    /// Drops `device`'s cell when no connection of it is left.
    fn unsubscribe(&self, device: &str, receiver: watch::Receiver<Pushed>) {
        drop(receiver);
        let mut cells = self
            .inner
            .wake
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cells
            .get(device)
            .is_some_and(|cell| cell.receiver_count() == 0)
        {
            cells.remove(device);
        }
    }

    /// Publishes `device`'s copy `seq` (committed) to its connections; `frame` encodes its `deliver`.
    fn notify(&self, device: &str, seq: u64, frame: impl FnOnce() -> Vec<u8>) {
        let live = {
            let cells = self
                .inner
                .wake
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match cells.get(device) {
                Some(cell) => seq > cell.borrow().seq,
                None => false,
            }
        };
        if !live {
            return;
        }
        // Encoded outside the lock; the cell keeps only the newest copy.
        let frame: Arc<[u8]> = Arc::from(frame());
        let cells = self
            .inner
            .wake
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cell) = cells.get(device) {
            cell.send_if_modified(|latest| {
                if seq <= latest.seq {
                    return false;
                }
                *latest = Pushed {
                    seq,
                    frame: Some(frame),
                };
                true
            });
        }
    }

    /// Serves one channel until it ends: requests in, replies and deliveries out.
    pub async fn serve_channel(&self, channel: Channel) {
        let device = channel.peer().to_string();
        let (mut reader, writer) = channel.split();
        let mut wake = self.subscribe(&device);
        *self
            .inner
            .online
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(device.clone())
            .or_insert(0) += 1;
        let _online = OnlineGuard {
            relay: self.clone(),
            device: device.clone(),
        };
        let mut registered = match Box::pin(self.inner.store.device(&device)).await {
            Ok(record) => record.is_some(),
            Err(error) => {
                tracing::error!(%error, "relay store failed");
                return;
            }
        };
        // Deliveries start after sequence 0 on every connection: whatever is still stored is unacknowledged.
        let mut cursor = 0u64;
        let config = &self.inner.config;
        let metrics = &self.inner.metrics;
        let _connected = metrics.connected();
        let mut budget = TokenBucket::new(config.requests_per_second, config.request_burst);
        let (mut malformed, mut limited) = (0u32, 0u32);
        let mut more = registered;
        let idle = tokio::time::sleep(config.idle_timeout);
        tokio::pin!(idle);
        let closed = loop {
            if registered && more {
                // Boxed: the store's futures are large, and an idle connection should not carry
                // their space (memory per idle client).
                match Box::pin(self.deliver_batch(&device, &mut cursor, &writer)).await {
                    Ok(full) => more = full,
                    Err(()) => break Closed::Peer,
                }
            }
            tokio::select! {
                biased;
                incoming = reader.recv() => {
                    let Ok(Some(bytes)) = incoming else { break Closed::Peer };
                    idle.as_mut().reset(tokio::time::Instant::now() + config.idle_timeout);
                    // The request and its reply live in this block only, and the awaits are boxed: an
                    // idle connection's task keeps none of their space (memory per idle client).
                    let (encoded, violation, now_registered) = {
                        let (reply, now_registered) = if budget.take() {
                            limited = 0;
                            Box::pin(self.handle(&device, &bytes)).await
                        } else {
                            limited += 1;
                            let message = "request rate exceeded; slow down".to_owned();
                            (Reply::Error { req: salvage_req(&bytes), code: ErrorCode::RateLimited, message }, false)
                        };
                        if let Reply::Error { code, .. } = &reply {
                            metrics.refused(*code);
                        }
                        let violation = matches!(reply, Reply::Error { code: ErrorCode::Malformed, .. });
                        (encode_reply(&reply), violation, now_registered)
                    };
                    drop(bytes);
                    if Box::pin(writer.send(encoded)).await.is_err() {
                        break Closed::Peer;
                    }
                    malformed = if violation { malformed + 1 } else { 0 };
                    if malformed >= config.max_malformed {
                        tracing::debug!(%device, "closing a channel that keeps sending malformed frames");
                        break Closed::Malformed;
                    }
                    if limited >= config.max_rate_limited {
                        tracing::debug!(%device, "closing a channel that keeps exceeding its request rate");
                        break Closed::RateLimited;
                    }
                    if now_registered && !registered {
                        registered = true;
                        more = true;
                    }
                }
                _ = std::future::ready(()), if registered && more => {}
                changed = wake.changed(), if registered => {
                    if changed.is_err() {
                        break Closed::Peer;
                    }
                    let pushed = wake.borrow_and_update().clone();
                    match pushed.frame {
                        Some(frame) if !more && pushed.seq == cursor + 1 => {
                            if Box::pin(writer.send(frame.to_vec())).await.is_err() {
                                break Closed::Peer;
                            }
                            cursor = pushed.seq;
                            metrics.delivered.increment(1);
                        }
                        _ => more = more || pushed.seq > cursor,
                    }
                }
                () = &mut idle => {
                    tracing::debug!(%device, "closing an idle channel");
                    break Closed::Idle;
                }
            }
        };
        metrics.closed(closed);
        if closed != Closed::Peer {
            writer.close();
        }
        self.unsubscribe(&device, wake);
    }

    /// Sends one batch of queued messages after `cursor`; `Ok(true)` when the batch was full (more may
    /// follow).
    async fn deliver_batch(
        &self,
        device: &str,
        cursor: &mut u64,
        writer: &ChannelWriter,
    ) -> Result<bool, ()> {
        let batch = self.inner.config.delivery_batch;
        let messages = self
            .inner
            .store
            .pending(device, *cursor, batch)
            .await
            .map_err(|error| {
                tracing::error!(%error, "relay store failed");
            })?;
        let full = messages.len() >= batch as usize;
        for message in messages {
            *cursor = message.seq;
            let deliver = Reply::Deliver {
                seq: message.seq,
                from_user: message.from_user,
                from_device: message.from_device,
                message_id: message.message_id,
                ciphertext: message.ciphertext,
                stored_at: message.stored_at,
            };
            writer.send(encode_reply(&deliver)).await.map_err(|_| ())?;
            self.inner.metrics.delivered.increment(1);
        }
        Ok(full)
    }

    /// Handles one frame; returns the reply and whether the device is now registered.
    async fn handle(&self, device: &str, bytes: &[u8]) -> (Reply, bool) {
        let request = match decode_request(bytes) {
            Ok(request) => request,
            Err(error) => {
                let reply = Reply::Error {
                    req: salvage_req(bytes),
                    code: ErrorCode::Malformed,
                    message: error.to_string(),
                };
                return (reply, false);
            }
        };
        let req = request.req();
        let registering = matches!(request, Request::RegisterDevice { .. });
        match self.execute(device, request).await {
            Ok(reply) => (reply, registering),
            Err(Refusal(code, message)) => (
                Reply::Error {
                    req: Some(req),
                    code,
                    message,
                },
                false,
            ),
        }
    }

    fn check(&self, what: &str, value: &str, max: usize) -> Result<(), Refusal> {
        if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
            return Err(Refusal(
                ErrorCode::Invalid,
                format!("{what} must be 1 to {max} bytes without control characters"),
            ));
        }
        Ok(())
    }

    async fn execute(&self, device: &str, request: Request) -> Result<Reply, Refusal> {
        let config = &self.inner.config;
        let store = &self.inner.store;
        match request {
            Request::RegisterDevice {
                req,
                username,
                identity_key,
                signing_key,
                invite,
            } => {
                self.check("username", &username, config.max_username)?;
                self.check("identity_key", &identity_key, config.max_field)?;
                self.check("signing_key", &signing_key, config.max_field)?;
                if let Some(token) = &invite {
                    self.check("invite", token.expose(), config.max_field)?;
                }
                let token_hash = invite
                    .as_ref()
                    .map(|token| crate::invite::token_hash(token.expose()));
                let registration = Registration {
                    username: &username,
                    device,
                    identity_key: &identity_key,
                    signing_key: &signing_key,
                };
                let admission = Admission {
                    invite_only: config.invite_only,
                    token_hash: token_hash.as_deref(),
                };
                store.register_device(&registration, &admission).await?;
                Ok(Reply::Ok { req })
            }
            Request::ListDevices { req, username } => {
                self.check("username", &username, config.max_username)?;
                self.require_registered(device).await?;
                let devices = store.list_devices(&username).await?;
                Ok(Reply::Devices {
                    req,
                    username,
                    devices,
                })
            }
            Request::CountPrekeys { req } => {
                self.require_registered(device).await?;
                let one_time_keys = store.count_one_time_keys(device).await?;
                Ok(Reply::Prekeys { req, one_time_keys })
            }
            Request::LinkDevice { req } => {
                let Some(me) = store.device(device).await? else {
                    return Err(Refusal(
                        ErrorCode::NotRegistered,
                        "register this device first".into(),
                    ));
                };
                let (token, expires_at) =
                    crate::invite::mint(store, Some(&me.username), config.link_ttl).await?;
                Ok(Reply::Link {
                    req,
                    token: token.as_str().into(),
                    expires_at,
                })
            }
            Request::PublishPrekeys {
                req,
                one_time_keys,
                fallback_key,
            } => {
                if one_time_keys.len() > config.max_prekeys {
                    return Err(Refusal(
                        ErrorCode::Invalid,
                        format!("at most {} one-time keys per request", config.max_prekeys),
                    ));
                }
                for key in one_time_keys.iter().chain(fallback_key.as_ref()) {
                    self.check("key_id", &key.key_id, config.max_field)?;
                    self.check("key", &key.key, config.max_field)?;
                }
                store
                    .publish_prekeys(device, &one_time_keys, fallback_key.as_ref())
                    .await?;
                Ok(Reply::Ok { req })
            }
            Request::FetchBundle { req, username } => {
                self.check("username", &username, config.max_username)?;
                self.require_registered(device).await?;
                let devices = store.fetch_bundles(&username).await?;
                Ok(Reply::Bundle {
                    req,
                    username,
                    devices,
                })
            }
            Request::Send {
                req,
                message_id,
                to,
                envelopes,
            } => {
                self.check("message_id", &message_id, config.max_field)?;
                self.check("to", &to, config.max_username)?;
                if envelopes.is_empty() || envelopes.len() > config.max_envelopes {
                    return Err(Refusal(
                        ErrorCode::Invalid,
                        format!("a send needs 1 to {} envelopes", config.max_envelopes),
                    ));
                }
                match store.enqueue(device, &message_id, &to, &envelopes).await? {
                    Enqueued::Stored {
                        copies,
                        from_user,
                        stored_at,
                    } => {
                        self.inner.metrics.stored.increment(copies.len() as u64);
                        for (recipient, seq) in copies {
                            let Some(envelope) = envelopes.iter().find(|e| e.device == recipient)
                            else {
                                continue;
                            };
                            self.notify(&recipient, seq, || {
                                encode_reply(&Reply::Deliver {
                                    seq,
                                    from_user: from_user.clone(),
                                    from_device: device.to_owned(),
                                    message_id: message_id.clone(),
                                    ciphertext: envelope.ciphertext.clone(),
                                    stored_at,
                                })
                            });
                        }
                        Ok(Reply::Sent {
                            req,
                            message_id,
                            duplicate: false,
                        })
                    }
                    Enqueued::Duplicate => Ok(Reply::Sent {
                        req,
                        message_id,
                        duplicate: true,
                    }),
                }
            }
            Request::Ping { req } => Ok(Reply::Pong { req }),
            Request::ListUsers { req } => {
                let visible = store.visible_users(device).await?;
                let online = self.inner.online.lock().unwrap_or_else(|p| p.into_inner());
                let users = visible
                    .into_iter()
                    .map(|(username, devices)| UserPresence {
                        online: devices.iter().any(|d| online.contains_key(d)),
                        username,
                    })
                    .collect();
                Ok(Reply::Users { req, users })
            }
            Request::RemoveDevice {
                req,
                device: target,
            } => {
                let target = target.unwrap_or_else(|| device.to_owned());
                self.check("device", &target, config.max_field)?;
                if !store.remove_device(device, &target).await? {
                    return Err(Refusal(
                        ErrorCode::UnknownDevice,
                        format!("no device {target}"),
                    ));
                }
                Ok(Reply::Ok { req })
            }
            Request::Ack { req, messages } => {
                if messages.len() > config.max_acks {
                    return Err(Refusal(
                        ErrorCode::Invalid,
                        format!("at most {} acks per request", config.max_acks),
                    ));
                }
                store.ack(device, &messages).await?;
                Ok(Reply::Ok { req })
            }
        }
    }

    async fn require_registered(&self, device: &str) -> Result<(), Refusal> {
        match self.inner.store.device(device).await? {
            Some(_) => Ok(()),
            None => Err(Refusal(
                ErrorCode::NotRegistered,
                "register this device first".into(),
            )),
        }
    }
}
