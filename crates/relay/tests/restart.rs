//! The relay restarted on the same database: queued messages, sequence numbers and idempotency survive;
//! many concurrent senders to one device get one strictly increasing sequence, each sender's messages in
//! its own order, and no copy at the wrong device.

mod common;

use common::{connect, start, start_in};
use tessera_channel::Identity;
use tessera_relay::protocol::Envelope;

fn env(identity: &Identity, ciphertext: String) -> Envelope {
    Envelope {
        device: identity.public_key().to_string(),
        ciphertext,
    }
}

#[tokio::test]
async fn queued_messages_survive_a_relay_restart() {
    let relay = start().await;
    let (alice_key, bob_key) = (Identity::generate(), Identity::generate());
    let mut bob = connect(&relay, &bob_key).await;
    bob.register("bob", "ik-b", "sk-b").await.expect("bob");
    bob.close().await;
    let mut alice = connect(&relay, &alice_key).await;
    alice
        .register("alice", "ik-a", "sk-a")
        .await
        .expect("alice");
    for i in 1..=10 {
        alice
            .send(
                &format!("m{i}"),
                "bob",
                vec![env(&bob_key, format!("c{i}"))],
            )
            .await
            .expect("send");
    }
    alice.close().await;
    let dir = relay.stop().await;

    let relay = start_in(dir).await;
    let mut alice = connect(&relay, &alice_key).await;
    // A retry after the restart is still recognised; a new message continues the sequence.
    assert!(
        alice
            .send("m10", "bob", vec![env(&bob_key, "c10".into())])
            .await
            .expect("retry")
    );
    assert!(
        !alice
            .send("m11", "bob", vec![env(&bob_key, "c11".into())])
            .await
            .expect("send")
    );
    let mut bob = connect(&relay, &bob_key).await;
    for i in 1..=11u64 {
        let delivery = bob.next_delivery().await.expect("deliver");
        assert_eq!(
            (delivery.seq, delivery.ciphertext.as_str()),
            (i, format!("c{i}").as_str())
        );
        bob.ack(vec![delivery.reference()]).await.expect("ack");
    }
    bob.close().await;
    alice.close().await;
}

#[tokio::test]
async fn concurrent_senders_one_sequence_no_misdelivery() {
    const SENDERS: usize = 20;
    const EACH: usize = 15;
    let relay = start().await;
    let (bob_key, carol_key) = (Identity::generate(), Identity::generate());
    let mut bob = connect(&relay, &bob_key).await;
    bob.register("bob", "ik-b", "sk-b").await.expect("bob");
    let mut carol = connect(&relay, &carol_key).await;
    carol
        .register("carol", "ik-c", "sk-c")
        .await
        .expect("carol");

    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (url, key) = (relay.url.clone(), relay.key);
        let (bob_key, carol_key) = (bob_key.clone(), carol_key.clone());
        tasks.push(tokio::spawn(async move {
            let me = Identity::generate();
            let channel = common::connector()
                .connect(&url, key, &me)
                .await
                .expect("connect");
            let mut client = tessera_relay::client::RelayClient::new(channel);
            client
                .register(&format!("sender{s}"), "ik", "sk")
                .await
                .expect("register");
            for i in 0..EACH {
                let (to, key) = if i % 3 == 0 {
                    ("carol", &carol_key)
                } else {
                    ("bob", &bob_key)
                };
                client
                    .send(
                        &format!("m{i}"),
                        to,
                        vec![env(key, format!("{to}:{s}:{i}"))],
                    )
                    .await
                    .expect("send");
            }
            client.close().await;
        }));
    }
    for task in tasks {
        task.await.expect("sender");
    }

    for (client, name) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        let expected = (0..SENDERS)
            .map(|_| {
                (0..EACH)
                    .filter(|i| (i % 3 == 0) == (name == "carol"))
                    .count()
            })
            .sum::<usize>();
        let mut last_seq = 0;
        let mut last_per_sender = std::collections::HashMap::new();
        for _ in 0..expected {
            let delivery = client.next_delivery().await.expect("deliver");
            assert!(delivery.seq > last_seq, "sequence must increase");
            last_seq = delivery.seq;
            let mut parts = delivery.ciphertext.split(':');
            assert_eq!(parts.next(), Some(name), "delivered to the wrong device");
            let sender: usize = parts.next().and_then(|p| p.parse().ok()).expect("sender");
            let index: usize = parts.next().and_then(|p| p.parse().ok()).expect("index");
            if let Some(previous) = last_per_sender.insert(sender, index) {
                assert!(index > previous, "a sender's messages out of order");
            }
            client.ack(vec![delivery.reference()]).await.expect("ack");
        }
        assert_eq!(last_seq as usize, expected);
    }
    let bob_id = bob_key.public_key().to_string();
    use tessera_relay::store::Store;
    assert!(
        relay
            .store
            .pending(&bob_id, 0, 10)
            .await
            .expect("pending")
            .is_empty()
    );
    bob.close().await;
    carol.close().await;
}

#[tokio::test]
async fn two_hundred_clients_each_get_only_their_own_message() {
    const CLIENTS: usize = 200;
    let relay = std::sync::Arc::new(start().await);
    let keys: Vec<Identity> = (0..CLIENTS).map(|_| Identity::generate()).collect();
    let keys = std::sync::Arc::new(keys);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (relay, keys, barrier) = (relay.clone(), keys.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&relay, &keys[i]).await;
            client
                .register(&format!("user{i}"), "ik", "sk")
                .await
                .expect("register");
            barrier.wait().await; // every recipient exists
            let to = (i + 1) % CLIENTS;
            client
                .send(
                    "hello",
                    &format!("user{to}"),
                    vec![env(&keys[to], format!("for {to} from {i}"))],
                )
                .await
                .expect("send");
            let delivery = client.next_delivery().await.expect("deliver");
            let from = (i + CLIENTS - 1) % CLIENTS;
            assert_eq!(
                delivery.ciphertext,
                format!("for {i} from {from}"),
                "misdelivered"
            );
            assert_eq!(delivery.from_device, keys[from].public_key().to_string());
            assert_eq!(delivery.from_user, format!("user{from}"));
            client.ack(vec![delivery.reference()]).await.expect("ack");
            client.close().await;
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
}
