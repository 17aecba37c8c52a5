//! A relay that replays: the real `Relay` over a store that stores every one of the first sends twice,
//! the second copy under a forged message id (the same ciphertext, a new sequence number). The
//! recipient's `ChatDevice` decrypts each message once: the application never sees a replay, also for
//! pre-key messages built on the fallback key (vodozemac would accept those again), and also when the
//! relay delivers the replay as if another device had sent it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{connect, serve_relay};
use tessera_channel::Identity;
use tessera_relay::chat::ChatDevice;
use tessera_relay::e2e::OlmDevice;
use tessera_relay::protocol::{DeviceBundle, DeviceId, DeviceKeys, Envelope, MessageRef, PreKey};
use tessera_relay::server::Relay;
use tessera_relay::store::{
    Admission, DeviceRecord, Enqueued, Registration, SqliteStore, Store, StoreError, StoredMessage,
};

/// A store that replays the first `replays` sends: each is stored again under `<id>-replay`, sent by
/// `forge_as` when set (another registered device) instead of the real sender.
#[derive(Clone)]
struct ReplayingStore {
    inner: SqliteStore,
    replays: Arc<AtomicUsize>,
    forge_as: Option<DeviceId>,
}

impl Store for ReplayingStore {
    async fn register_device(
        &self,
        registration: &Registration<'_>,
        admission: &Admission<'_>,
    ) -> Result<(), StoreError> {
        self.inner.register_device(registration, admission).await
    }
    async fn create_invite(
        &self,
        token_hash: &str,
        username: Option<&str>,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .create_invite(token_hash, username, expires_at)
            .await
    }
    async fn count_one_time_keys(&self, device: &str) -> Result<u64, StoreError> {
        self.inner.count_one_time_keys(device).await
    }
    async fn list_devices(&self, username: &str) -> Result<Vec<DeviceKeys>, StoreError> {
        self.inner.list_devices(username).await
    }
    async fn device(&self, device: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.inner.device(device).await
    }
    async fn publish_prekeys(
        &self,
        device: &str,
        one_time: &[PreKey],
        fallback: Option<&PreKey>,
    ) -> Result<(), StoreError> {
        self.inner.publish_prekeys(device, one_time, fallback).await
    }
    async fn fetch_bundles(&self, username: &str) -> Result<Vec<DeviceBundle>, StoreError> {
        self.inner.fetch_bundles(username).await
    }
    async fn enqueue(
        &self,
        sender: &str,
        message_id: &str,
        to: &str,
        envelopes: &[Envelope],
    ) -> Result<Enqueued, StoreError> {
        let stored = self
            .inner
            .enqueue(sender, message_id, to, envelopes)
            .await?;
        let replay = self
            .replays
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if replay && matches!(stored, Enqueued::Stored { .. }) {
            let forged = format!("{message_id}-replay");
            let from = self.forge_as.as_deref().unwrap_or(sender);
            self.inner.enqueue(from, &forged, to, envelopes).await?;
        }
        Ok(stored)
    }
    async fn pending(
        &self,
        device: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.pending(device, after, limit).await
    }
    async fn ack(&self, device: &str, messages: &[MessageRef]) -> Result<u64, StoreError> {
        self.inner.ack(device, messages).await
    }
    async fn remove_device(&self, caller: &str, device: &str) -> Result<bool, StoreError> {
        self.inner.remove_device(caller, device).await
    }
    async fn expire(&self, cutoff: i64) -> Result<u64, StoreError> {
        self.inner.expire(cutoff).await
    }
    async fn visible_users(
        &self,
        device: &str,
    ) -> Result<Vec<(String, Vec<DeviceId>)>, StoreError> {
        self.inner.visible_users(device).await
    }
}

#[tokio::test]
async fn a_replaying_relay_never_shows_a_message_twice() {
    replaying_relay(false).await;
}

/// The same replays delivered as if another (registered) device had sent them: the dedup on
/// `(device, message id)` and the sessions of that device do not catch them, the session ids
/// remembered per sender identity key do.
#[tokio::test]
async fn a_relay_replaying_under_another_device_never_shows_a_message_twice() {
    replaying_relay(true).await;
}

async fn replaying_relay(forge_device: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::open(&dir).await;
    let mallory_id = Identity::generate();
    let replaying = ReplayingStore {
        inner: store.clone(),
        replays: Arc::new(AtomicUsize::new(2)),
        forge_as: forge_device.then(|| mallory_id.public_key().to_string()),
    };
    let relay = serve_relay(dir, store.clone(), Relay::new(replaying, common::config())).await;
    let (alice_id, bob_id) = (Identity::generate(), Identity::generate());
    let bob_device = bob_id.public_key().to_string();
    let mut mallory = connect(&relay, &mallory_id).await;
    mallory
        .register("mallory", "ik", "sk")
        .await
        .expect("mallory");

    // Bob publishes no one-time key: alice's session rests on his fallback key, the case where
    // vodozemac would build a second session from a replayed pre-key message.
    let bob = ChatDevice::register(
        connect(&relay, &bob_id).await,
        "bob",
        bob_device.clone(),
        OlmDevice::new(),
        0,
    )
    .await
    .expect("bob");
    let bob_olm = bob.close().await;
    let mut alice = ChatDevice::register(
        connect(&relay, &alice_id).await,
        "alice",
        alice_id.public_key().to_string(),
        OlmDevice::new(),
        5,
    )
    .await
    .expect("alice");
    let texts = ["first, a pre-key message", "second, still pre-key", "third"];
    for text in texts {
        alice.send_text("bob", text).await.expect("send");
    }
    // The relay holds five copies for bob: each of the first two twice, in sequence order.
    let queued = store.pending(&bob_device, 0, 10).await.expect("pending");
    let ids: Vec<&str> = queued.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert_eq!(ids[1], format!("{}-replay", ids[0]));
    assert_eq!(queued[1].ciphertext, queued[0].ciphertext);
    assert_eq!(ids[3], format!("{}-replay", ids[2]));
    if forge_device {
        assert_eq!(queued[1].from_device, mallory_id.public_key().to_string());
        assert_ne!(queued[1].from_device, queued[0].from_device);
    }
    for copy in &queued[..4] {
        assert!(copy.ciphertext.contains(r#""type":0"#), "a pre-key message");
    }

    // Bob comes back: three messages reach him, each once, in order; the replays are dropped (and
    // acknowledged, so the relay deletes them).
    let mut bob = ChatDevice::resume(
        connect(&relay, &bob_id).await,
        "bob",
        bob_device.clone(),
        bob_olm,
    );
    let mut seen = Vec::new();
    for _ in 0..texts.len() {
        let message = bob.receive().await.expect("receive");
        assert!(
            !message.message_id.ends_with("-replay"),
            "{}",
            message.message_id
        );
        seen.push(String::from_utf8(message.body).expect("utf-8"));
    }
    assert_eq!(seen, texts);
    assert!(
        store
            .pending(&bob_device, 0, 10)
            .await
            .expect("pending")
            .is_empty()
    );
}
