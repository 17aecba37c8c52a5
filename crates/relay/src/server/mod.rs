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
use std::sync::{Arc, Mutex, MutexGuard};

use tessera_channel::{Channel, ChannelWriter, Listener};
use tokio::sync::watch;

use crate::limit::TokenBucket;
use crate::metrics::{Closed, RelayMetrics};
use crate::protocol::codec::{encode_reply, salvage_req};
use crate::protocol::{DeviceId, ErrorCode, Reply};
use crate::store::{Store, StoreError};

mod config;
mod requests;
mod size;

pub use config::RelayConfig;

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
    /// Bumped when the device is registered anew (removed, then registered again): its new queue's
    /// sequence numbers start again at 1, so every connection of it starts again from cursor 0.
    epoch: u64,
    /// The device was removed from its account: its open channels are told and closed.
    removed: bool,
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
        let mut cells = self.cells();
        cells
            .entry(device.to_owned())
            .or_insert_with(|| watch::channel(Pushed::default()).0)
            .subscribe()
    }

    /// Drops `device`'s cell when no connection of it is left.
    fn unsubscribe(&self, device: &str, receiver: watch::Receiver<Pushed>) {
        drop(receiver);
        let mut cells = self.cells();
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
            let cells = self.cells();
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
        let cells = self.cells();
        if let Some(cell) = cells.get(device) {
            cell.send_if_modified(|latest| {
                if seq <= latest.seq {
                    return false;
                }
                *latest = Pushed {
                    seq,
                    frame: Some(frame),
                    epoch: latest.epoch,
                    removed: latest.removed,
                };
                true
            });
        }
    }

    /// Starts `device`'s cell again for a new queue (the device was registered anew: its sequence
    /// numbers start again at 1); every connection of it sees the new epoch and resets its cursor.
    fn new_queue(&self, device: &str) -> u64 {
        self.restart(device, false)
    }

    /// Tells every open channel of `device` that it was removed from its account (they close); the
    /// channel that removed its own device has stopped listening for this already.
    fn device_removed(&self, device: &str) {
        self.restart(device, true);
    }

    /// Starts `device`'s cell again, if it has one: a new epoch, no copy, and whether the device is gone.
    /// Returns the new epoch (0 without a cell).
    fn restart(&self, device: &str, removed: bool) -> u64 {
        let cells = self.cells();
        let Some(cell) = cells.get(device) else {
            return 0;
        };
        let mut epoch = 0;
        cell.send_modify(|latest| {
            epoch = latest.epoch.wrapping_add(1);
            *latest = Pushed {
                seq: 0,
                frame: None,
                epoch,
                removed,
            };
        });
        epoch
    }

    /// The live-push cells, locked.
    fn cells(&self) -> MutexGuard<'_, HashMap<DeviceId, watch::Sender<Pushed>>> {
        self.inner
            .wake
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Serves one channel until it ends: requests in, replies and deliveries out.
    pub async fn serve_channel(&self, channel: Channel) {
        let device = channel.peer().to_string();
        let (mut reader, writer) = channel.split();
        let limit = self.inner.config.max_connections_per_device.max(1);
        let admitted = {
            let mut online = self.inner.online.lock().unwrap_or_else(|p| p.into_inner());
            let count = online.entry(device.clone()).or_insert(0);
            if *count >= limit {
                false
            } else {
                *count += 1;
                true
            }
        };
        if !admitted {
            // The entry exists: this device has `limit` connections open.
            tracing::debug!(%device, "refusing a connection: too many open for this device");
            self.inner.metrics.refused(ErrorCode::RateLimited);
            let refusal = Reply::Error {
                req: None,
                code: ErrorCode::RateLimited,
                message: format!(
                    "this device already has {limit} connections open, the most allowed; close one \
                     first"
                ),
            };
            // The peer may be gone already; the channel is closed either way.
            let _ = Box::pin(writer.send(encode_reply(&refusal))).await;
            writer.close();
            return;
        }
        let mut wake = self.subscribe(&device);
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
        let mut epoch = wake.borrow_and_update().epoch;
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
                    let (encoded, violation, now_registered, fresh, removed_self) = {
                        let handled = if budget.take() {
                            limited = 0;
                            Box::pin(self.handle(&device, &bytes)).await
                        } else {
                            limited += 1;
                            let message = "request rate exceeded; slow down".to_owned();
                            requests::Handled::reply(Reply::Error { req: salvage_req(&bytes), code: ErrorCode::RateLimited, message })
                        };
                        if let Reply::Error { code, .. } = &handled.reply {
                            metrics.refused(*code);
                        }
                        let violation = matches!(handled.reply, Reply::Error { code: ErrorCode::Malformed, .. });
                        (encode_reply(&handled.reply), violation, handled.registered, handled.fresh, handled.removed_self)
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
                    if now_registered && fresh {
                        // A new queue (the device was removed, then registered again here): its
                        // sequence numbers start again at 1.
                        epoch = self.new_queue(&device);
                        cursor = 0;
                        more = true;
                    }
                    if now_registered && !registered {
                        registered = true;
                        more = true;
                    }
                    if removed_self {
                        // This channel may register the device anew; until then it has no queue.
                        registered = false;
                        more = false;
                        wake.borrow_and_update();
                    }
                }
                _ = std::future::ready(()), if registered && more => {}
                changed = wake.changed(), if registered => {
                    if changed.is_err() {
                        break Closed::Peer;
                    }
                    let pushed = wake.borrow_and_update().clone();
                    if pushed.removed {
                        let removed = Reply::Error {
                            req: None,
                            code: ErrorCode::NotRegistered,
                            message: "this device was removed from its account".to_owned(),
                        };
                        let _ = Box::pin(writer.send(encode_reply(&removed))).await;
                        break Closed::Removed;
                    }
                    if pushed.epoch != epoch {
                        // Registered anew on another connection: a new queue, from the start.
                        epoch = pushed.epoch;
                        cursor = 0;
                        more = true;
                        continue;
                    }
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

    /// Sends one batch of queued messages after `cursor` (at most `delivery_batch` messages and
    /// `delivery_batch_bytes` of ciphertext); `Ok(true)` when the batch was full (more may follow).
    async fn deliver_batch(
        &self,
        device: &str,
        cursor: &mut u64,
        writer: &ChannelWriter,
    ) -> Result<bool, ()> {
        let config = &self.inner.config;
        let (messages, full) = self
            .inner
            .store
            .pending_within(
                device,
                *cursor,
                config.delivery_batch,
                config.delivery_batch_bytes,
            )
            .await
            .map_err(|error| {
                tracing::error!(%error, "relay store failed");
            })?;
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
}
