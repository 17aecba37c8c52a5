//! What a hostile sender or relay can do to a device's inbox, and must not: block it with one
//! undecryptable delivery, confuse request and reply, or fill the client's memory.

mod common;

use std::time::Duration;

use common::{connect, start};
use tessera_channel::Identity;
use tessera_relay::chat::{ChatDevice, ChatEvent};
use tessera_relay::e2e::{E2eError, OlmDevice};
use tessera_relay::protocol::Envelope;

async fn chat(relay: &common::TestRelay, user: &str, key: &Identity) -> ChatDevice {
    let client = connect(relay, key).await;
    ChatDevice::register(
        client,
        user,
        key.public_key().to_string(),
        OlmDevice::new(),
        10,
    )
    .await
    .expect("register")
}

/// One garbage envelope ahead of a real message: the garbage is acknowledged and reported, the real
/// message still arrives, and neither comes again after a reconnect.
#[tokio::test]
async fn an_undecryptable_delivery_is_reported_and_does_not_block_the_inbox() {
    let relay = start().await;
    let (m, a, b) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let bob = chat(&relay, "bob", &b).await;
    let olm = bob.close().await;
    let mut mallory = connect(&relay, &m).await;
    mallory
        .register("mallory", "ik", "sk")
        .await
        .expect("mallory");
    let devices = mallory.list_devices("bob").await.expect("list");
    let garbage = Envelope {
        device: devices[0].device.clone(),
        ciphertext: "garbage".into(),
    };
    mallory.send("x", "bob", vec![garbage]).await.expect("send");
    let mut alice = chat(&relay, "alice", &a).await;
    alice.send_text("bob", "hello").await.expect("send");

    let device = b.public_key().to_string();
    let mut bob = ChatDevice::resume(connect(&relay, &b).await, "bob", device.clone(), olm);
    let event = tokio::time::timeout(Duration::from_secs(5), bob.next_event(None))
        .await
        .expect("no hang")
        .expect("event");
    let ChatEvent::Undecryptable(report) = event else {
        panic!("expected the garbage first: {event:?}");
    };
    assert_eq!(
        (report.from_user.as_str(), report.message_id.as_str()),
        ("mallory", "x")
    );
    assert!(matches!(report.error, E2eError::Malformed(_)));
    let message = tokio::time::timeout(Duration::from_secs(5), bob.receive())
        .await
        .expect("no hang")
        .expect("the real message");
    assert_eq!(message.body, b"hello");
    assert!(bob.take_undecryptable().is_empty());

    // Nothing is left: the garbage was acknowledged too. Through receive(), another garbage
    // delivery is skipped but kept as a report.
    let olm = bob.close().await;
    let garbage = Envelope {
        device: devices[0].device.clone(),
        ciphertext: "{\"type\":1,\"body\":\"AAAA\"}".into(),
    };
    mallory.send("y", "bob", vec![garbage]).await.expect("send");
    alice.send_text("bob", "again").await.expect("send");
    let mut bob = ChatDevice::resume(connect(&relay, &b).await, "bob", device, olm);
    let message = tokio::time::timeout(Duration::from_secs(5), bob.receive())
        .await
        .expect("no hang")
        .expect("the next real message");
    assert_eq!(message.body, b"again");
    let reports = bob.take_undecryptable();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].message_id, "y");
}

/// A message under a changed identity key is reported (the hard warning) but not acknowledged: it stays
/// at the relay, comes again on the next connection, and decrypts once the new key is trusted.
#[tokio::test]
async fn a_message_under_a_changed_key_waits_for_trust() {
    let relay = start().await;
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut alice = chat(&relay, "alice", &a).await;
    let mut bob = chat(&relay, "bob", &b).await;
    // Alice pins bob's device on first contact.
    alice.send_text("bob", "hello").await.expect("send");
    let _ = tokio::time::timeout(Duration::from_secs(5), bob.receive())
        .await
        .expect("no hang")
        .expect("hello");
    // Bob's device comes back with a new Olm identity (reinstalled, or someone holding its channel key).
    let mut reinstalled = OlmDevice::new();
    let bundles = bob.client().fetch_bundle("alice").await.expect("bundles");
    let envelope = reinstalled
        .encrypt_for(&bundles[0], b"it is me, reinstalled")
        .expect("encrypt");
    bob.client()
        .send("new-1", "alice", vec![envelope])
        .await
        .expect("send");
    for _ in 0..2 {
        let ChatEvent::Undecryptable(report) = next_event(&mut alice).await else {
            panic!("expected the changed key's report");
        };
        assert!(matches!(report.error, E2eError::IdentityChanged { .. }));
        assert!(report.kept);
        assert_eq!(report.message_id, "new-1");
        // Kept at the relay: a new connection delivers it again.
        let olm = alice.close().await;
        alice = ChatDevice::resume(
            connect(&relay, &a).await,
            "alice",
            a.public_key().to_string(),
            olm,
        );
    }
    alice
        .trust(&b.public_key().to_string(), &reinstalled.identity_key())
        .expect("trust");
    let ChatEvent::Message(message) = next_event(&mut alice).await else {
        panic!("expected the message once the new key is trusted");
    };
    assert_eq!(message.body, b"it is me, reinstalled");
}

/// The next event of `device`, within five seconds.
async fn next_event(device: &mut ChatDevice) -> ChatEvent {
    tokio::time::timeout(Duration::from_secs(5), device.next_event(None))
        .await
        .expect("no hang")
        .expect("event")
}

/// A heartbeat's `pong` that comes after the delivery it waited for is not taken for the reply to the
/// next request (the ack).
#[tokio::test]
async fn a_late_pong_is_not_taken_for_the_next_reply() {
    let relay = start().await;
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut alice = connect(&relay, &a).await;
    alice.register("alice", "ik", "sk").await.expect("alice");
    let mut bob = connect(&relay, &b).await;
    bob.register("bob", "ik", "sk").await.expect("bob");
    let device = b.public_key().to_string();
    for i in 0..30 {
        let sender = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let envelope = Envelope {
                device: device.clone(),
                ciphertext: "c".into(),
            };
            alice
                .send(&format!("m{i}"), "bob", vec![envelope])
                .await
                .expect("send");
        };
        let (_, delivery) = tokio::join!(
            sender,
            bob.next_delivery_with_heartbeat(Duration::from_micros(200))
        );
        let delivery = delivery.expect("delivery");
        assert_eq!(delivery.message_id, format!("m{i}"));
        bob.ack(vec![delivery.reference()]).await.expect("ack");
    }
    bob.ping().await.expect("ping after it all");
}

/// The client keeps a bounded number of pushed deliveries: the rest are dropped unacknowledged, the
/// connection then reports it, and a new connection delivers them, in order, nothing lost.
#[tokio::test]
async fn the_delivery_buffer_is_bounded_and_loses_nothing() {
    use tessera_relay::client::ClientError;
    let relay = start().await;
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut alice = connect(&relay, &a).await;
    alice.register("alice", "ik", "sk").await.expect("alice");
    let mut bob = connect(&relay, &b).await;
    bob.register("bob", "ik", "sk").await.expect("bob");
    bob.close().await;
    let device = b.public_key().to_string();
    for i in 0..10 {
        let envelope = Envelope {
            device: device.clone(),
            ciphertext: format!("c{i}"),
        };
        alice
            .send(&format!("m{i}"), "bob", vec![envelope])
            .await
            .expect("send");
    }
    let mut received = Vec::new();
    // By count: 3 kept (the relay pushes all 10 before the pong).
    let mut bob = connect(&relay, &b).await;
    bob.set_delivery_buffer(3, usize::MAX);
    bob.ping().await.expect("ping");
    for _ in 0..3 {
        let delivery = bob.next_delivery().await.expect("kept");
        bob.ack(vec![delivery.reference()]).await.expect("ack");
        received.push(delivery.message_id);
    }
    let overflow = bob.next_delivery().await;
    assert!(
        matches!(overflow, Err(ClientError::DeliveriesDropped { dropped: 7 })),
        "{overflow:?}"
    );
    bob.close().await;
    // By bytes: two deliveries' worth.
    let mut bob = connect(&relay, &b).await;
    bob.set_delivery_buffer(100, 2 * (2 + 5 + device.len() + 2));
    bob.ping().await.expect("ping");
    for _ in 0..2 {
        let delivery = bob.next_delivery().await.expect("kept");
        bob.ack(vec![delivery.reference()]).await.expect("ack");
        received.push(delivery.message_id);
    }
    assert!(matches!(
        bob.next_delivery().await,
        Err(ClientError::DeliveriesDropped { dropped: 5 })
    ));
    bob.close().await;
    let mut bob = connect(&relay, &b).await;
    for _ in 0..5 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), bob.next_delivery())
            .await
            .expect("no hang")
            .expect("redelivered");
        bob.ack(vec![delivery.reference()]).await.expect("ack");
        received.push(delivery.message_id);
    }
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(received, expected, "all, in order, once");
}
