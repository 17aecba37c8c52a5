//! Bounds found by the relay audit (2026-12), over real channels: a send whose `deliver` could not fit
//! in a frame is refused (it would block the recipient's queue), a delivery batch has a byte budget, a
//! device has a bounded number of connections, an account a bounded number of devices and of
//! outstanding link tokens, and a device removed then registered again on one connection gets its new
//! messages live.

mod common;

use std::time::Duration;

use common::{connect, start};
use tessera_channel::Identity;
use tessera_relay::client::ClientError;
use tessera_relay::protocol::codec::encode_request;
use tessera_relay::protocol::{Envelope, ErrorCode, Request};

/// Safety net only: every wait below ends on an event long before this.
const NET: Duration = Duration::from_secs(20);

fn envelope(device: &str, ciphertext: String) -> Vec<Envelope> {
    vec![Envelope {
        device: device.into(),
        ciphertext,
    }]
}

/// A send of exactly 1 MiB (the channel's frame limit), from a sender with the longest username, and
/// sends just under it: each is refused (`invalid`) or delivered, and a small message sent after them
/// arrives too — nothing blocks the recipient's queue.
#[tokio::test]
async fn a_maximum_size_send_is_refused_or_delivered_and_never_blocks_the_queue() {
    let relay = start().await;
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut alice = connect(&relay, &a).await;
    let long_name = "a".repeat(64);
    alice.register(&long_name, "ik", "sk").await.expect("alice");
    let mut bob = connect(&relay, &b).await;
    bob.register("b", "ik", "sk").await.expect("bob");
    bob.close().await;
    let dev = b.public_key().to_string();
    let frame = |id: &str, c: String| {
        encode_request(&Request::Send {
            req: 3,
            message_id: id.into(),
            to: "b".into(),
            envelopes: envelope(&dev, c),
        })
    };
    let mut accepted = Vec::new();
    for (i, margin) in [0usize, 64, 128, 256, 512].into_iter().enumerate() {
        let id = format!("big{i}");
        let base = frame(&id, String::new()).len();
        let c = "x".repeat(1024 * 1024 - base - margin);
        assert_eq!(frame(&id, c.clone()).len(), 1024 * 1024 - margin);
        match alice.send(&id, "b", envelope(&dev, c)).await {
            Ok(_) => accepted.push(id),
            Err(ClientError::Refused {
                code: ErrorCode::Invalid,
                message,
            }) => assert!(message.contains("too large"), "{message}"),
            Err(other) => panic!("{id}: {other:?}"),
        }
    }
    // The exact maximum is refused; half a KiB under it leaves room for the deliver header.
    assert!(!accepted.contains(&"big0".to_owned()), "{accepted:?}");
    assert!(accepted.contains(&"big4".to_owned()), "{accepted:?}");
    alice
        .send("small", "b", envelope(&dev, "small".into()))
        .await
        .expect("small stored");
    let mut bob = connect(&relay, &b).await;
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("small") {
        let delivery = tokio::time::timeout(NET, bob.next_delivery())
            .await
            .expect("delivered in time")
            .expect("delivery");
        got.push(delivery.message_id);
    }
    accepted.push("small".into());
    assert_eq!(got, accepted);
}

/// A device removed and registered again on the same connection (a new queue, sequence numbers from 1
/// again) receives its new messages live, without reconnecting.
#[tokio::test]
async fn a_device_registered_again_on_its_connection_gets_new_messages_live() {
    let relay = start().await;
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut alice = connect(&relay, &a).await;
    alice.register("alice", "ik", "sk").await.expect("alice");
    let mut bob = connect(&relay, &b).await;
    bob.register("bob", "ik", "sk").await.expect("bob");
    let dev = b.public_key().to_string();
    for i in 0..3 {
        let id = format!("old{i}");
        alice
            .send(&id, "bob", envelope(&dev, "c".into()))
            .await
            .expect("send");
        let delivery = tokio::time::timeout(NET, bob.next_delivery())
            .await
            .expect("in time")
            .expect("delivery");
        assert_eq!(delivery.message_id, id);
        bob.ack(vec![delivery.reference()]).await.expect("ack");
    }
    bob.remove_device(None).await.expect("remove");
    bob.register("bob", "ik2", "sk2").await.expect("again");
    alice
        .send("new", "bob", envelope(&dev, "c".into()))
        .await
        .expect("send");
    let delivery = tokio::time::timeout(Duration::from_secs(5), bob.next_delivery())
        .await
        .expect("the new message arrives live, without a reconnect")
        .expect("delivery");
    assert_eq!((delivery.message_id.as_str(), delivery.seq), ("new", 1));
}

/// With a byte budget smaller than one message, every batch holds one message: all of them still
/// arrive, in order.
#[tokio::test]
async fn batches_split_by_bytes_deliver_everything_in_order() {
    let config = tessera_relay::server::RelayConfig {
        delivery_batch_bytes: 1,
        ..common::config()
    };
    let relay = common::start_with(tempfile::tempdir().expect("dir"), config).await;
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut alice = connect(&relay, &a).await;
    alice.register("alice", "ik", "sk").await.expect("alice");
    let mut bob = connect(&relay, &b).await;
    bob.register("bob", "ik", "sk").await.expect("bob");
    bob.close().await;
    let dev = b.public_key().to_string();
    let ids: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    for id in &ids {
        alice
            .send(id, "bob", envelope(&dev, "x".repeat(100_000)))
            .await
            .expect("send");
    }
    let mut bob = connect(&relay, &b).await;
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let delivery = tokio::time::timeout(NET, bob.next_delivery())
            .await
            .expect("in time")
            .expect("delivery");
        got.push(delivery.message_id);
    }
    assert_eq!(got, ids);
}

/// A device has at most `max_connections_per_device` connections open: one more is refused with a
/// clear error and closed; once one closes, a new one is served.
#[tokio::test]
async fn connections_per_device_are_capped() {
    let config = tessera_relay::server::RelayConfig {
        max_connections_per_device: 3,
        ..common::config()
    };
    let relay = common::start_with(tempfile::tempdir().expect("dir"), config).await;
    let b = Identity::generate();
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut bob = connect(&relay, &b).await;
        bob.register("bob", "ik", "sk").await.expect("served");
        open.push(bob);
    }
    let mut extra = connect(&relay, &b).await;
    let refused = tokio::time::timeout(NET, extra.register("bob", "ik", "sk"))
        .await
        .expect("answered in time");
    match refused {
        Err(ClientError::Refused {
            code: ErrorCode::RateLimited,
            message,
        }) => assert!(message.contains("3 connections"), "{message}"),
        other => panic!("the fourth connection was served: {other:?}"),
    }
    open.pop().expect("one").close().await;
    // The relay notices the close; a new connection is then served.
    let mut served = false;
    for _ in 0..50 {
        let mut bob = connect(&relay, &b).await;
        if bob.register("bob", "ik", "sk").await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "no connection served after one closed");
}
