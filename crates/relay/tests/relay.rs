//! The relay over real channels on 127.0.0.1 with a SQLite file: offline delivery, order, live push,
//! redelivery until acknowledged, multi-device copies, bad input.

mod common;

use common::{connect, connector, start};
use tessera_channel::Identity;
use tessera_relay::client::{ClientError, RelayClient};
use tessera_relay::protocol::codec::decode_reply;
use tessera_relay::protocol::{Envelope, ErrorCode, PreKey, Reply};
use tessera_relay::store::{Admission, Registration, Store};

fn env(identity: &Identity, ciphertext: &str) -> Envelope {
    Envelope {
        device: identity.public_key().to_string(),
        ciphertext: ciphertext.into(),
    }
}

#[tokio::test]
async fn offline_then_online_in_order_then_live_and_acks_delete() {
    let relay = start().await;
    let (alice_1, alice_2, bob_1) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );

    let mut bob = connect(&relay, &bob_1).await;
    bob.register("bob", "bob-ik", "bob-sk")
        .await
        .expect("register bob");
    let one_time = PreKey {
        key_id: "otk-1".into(),
        key: "bob-otk-1".into(),
    };
    let fallback = PreKey {
        key_id: "fb-1".into(),
        key: "bob-fb-1".into(),
    };
    bob.publish_prekeys(vec![one_time.clone()], Some(fallback.clone()))
        .await
        .expect("prekeys");
    bob.close().await; // bob goes offline

    let mut alice = connect(&relay, &alice_1).await;
    alice
        .register("alice", "alice-ik-1", "alice-sk-1")
        .await
        .expect("register a1");
    let mut alice_other = connect(&relay, &alice_2).await;
    // A second device of an account needs a link token from the first; without one it is refused.
    let refused = alice_other
        .register("alice", "alice-ik-2", "alice-sk-2")
        .await;
    assert!(
        matches!(
            &refused,
            Err(ClientError::Refused {
                code: ErrorCode::InviteRequired,
                ..
            })
        ),
        "{refused:?}"
    );
    let (link, _) = alice.link_device().await.expect("link token");
    alice_other
        .register_with("alice", "alice-ik-2", "alice-sk-2", Some(&link))
        .await
        .expect("register a2");

    // The bundle hands out bob's one-time key once, then only the fallback.
    let bundle = alice.fetch_bundle("bob").await.expect("bundle");
    assert_eq!(bundle.len(), 1);
    assert_eq!(bundle[0].device, bob_1.public_key().to_string());
    assert_eq!(bundle[0].identity_key, "bob-ik");
    assert_eq!(bundle[0].one_time_key, Some(one_time));
    let again = alice.fetch_bundle("bob").await.expect("bundle");
    assert_eq!(
        (again[0].one_time_key.clone(), again[0].fallback_key.clone()),
        (None, Some(fallback))
    );

    // Three messages while bob is offline, each with a copy for alice's other device; one retried.
    for i in 1..=3 {
        let envelopes = vec![
            env(&bob_1, &format!("ct-bob-{i}")),
            env(&alice_2, &format!("ct-a2-{i}")),
        ];
        assert!(
            !alice
                .send(&format!("m{i}"), "bob", envelopes)
                .await
                .expect("send")
        );
    }
    assert!(
        alice
            .send("m2", "bob", vec![env(&bob_1, "ct-bob-2")])
            .await
            .expect("retry")
    );

    // Alice's other device, online, got its copies pushed in order.
    for i in 1..=3 {
        let copy = alice_other.next_delivery().await.expect("copy");
        assert_eq!(
            (copy.seq, copy.ciphertext.as_str()),
            (i, format!("ct-a2-{i}").as_str())
        );
        assert_eq!(copy.from_user, "alice");
    }

    // Bob comes online: the queue arrives in order, then a live message is pushed.
    let mut bob = connect(&relay, &bob_1).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let delivery = bob.next_delivery().await.expect("deliver");
        assert_eq!(delivery.from_device, alice_1.public_key().to_string());
        seen.push((
            delivery.seq,
            delivery.message_id.clone(),
            delivery.ciphertext.clone(),
        ));
        if delivery.seq <= 2 {
            bob.ack(vec![delivery.reference()]).await.expect("ack");
        }
    }
    let expected: Vec<_> = (1..=3)
        .map(|i| (i, format!("m{i}"), format!("ct-bob-{i}")))
        .collect();
    assert_eq!(seen, expected);
    assert!(
        !alice
            .send("m4", "bob", vec![env(&bob_1, "ct-bob-4")])
            .await
            .expect("live send")
    );
    let live = bob.next_delivery().await.expect("live");
    assert_eq!((live.seq, live.ciphertext.as_str()), (4, "ct-bob-4"));

    // The relay holds exactly what was not acknowledged, byte for byte as the sender gave it.
    let bob_id = bob_1.public_key().to_string();
    let stored: Vec<_> = relay
        .store
        .pending(&bob_id, 0, 100)
        .await
        .expect("pending")
        .into_iter()
        .map(|m| (m.seq, m.ciphertext))
        .collect();
    assert_eq!(
        stored,
        vec![(3, "ct-bob-3".to_string()), (4, "ct-bob-4".to_string())]
    );
    bob.close().await;

    // Unacknowledged messages come again on reconnect; acknowledged ones never do.
    let mut bob = connect(&relay, &bob_1).await;
    let first = bob.next_delivery().await.expect("redeliver 3");
    let second = bob.next_delivery().await.expect("redeliver 4");
    assert_eq!((first.seq, second.seq), (3, 4));
    bob.ack(vec![first.reference(), second.reference()])
        .await
        .expect("ack");
    assert!(
        relay
            .store
            .pending(&bob_id, 0, 100)
            .await
            .expect("pending")
            .is_empty()
    );
    let record = relay
        .store
        .device(&bob_id)
        .await
        .expect("device")
        .expect("bob");
    assert_eq!(
        (
            record.username.as_str(),
            record.identity_key.as_str(),
            record.last_acked_seq
        ),
        ("bob", "bob-ik", 4)
    );
    bob.close().await;
    alice.close().await;
    alice_other.close().await;
}

#[tokio::test]
async fn bad_input_gets_error_replies() {
    let relay = start().await;
    let stranger = Identity::generate();
    let mut channel = connector()
        .connect(&relay.url, relay.key, &stranger)
        .await
        .expect("connect");
    channel.send(b"not json".to_vec()).await.expect("send");
    let reply = decode_reply(&channel_recv(&mut channel).await).expect("reply");
    assert!(
        matches!(
            reply,
            Reply::Error {
                req: None,
                code: ErrorCode::Malformed,
                ..
            }
        ),
        "{reply:?}"
    );
    channel
        .send(br#"{"type":"nope","req":5}"#.to_vec())
        .await
        .expect("send");
    let reply = decode_reply(&channel_recv(&mut channel).await).expect("reply");
    assert!(
        matches!(
            reply,
            Reply::Error {
                req: Some(5),
                code: ErrorCode::Malformed,
                ..
            }
        ),
        "{reply:?}"
    );

    // Unregistered devices cannot send or fetch; a device cannot be moved to another account.
    let mut client = RelayClient::new(channel);
    let refused = client.send("m1", "bob", vec![env(&stranger, "x")]).await;
    assert!(
        matches!(
            refused,
            Err(tessera_relay::client::ClientError::Refused {
                code: ErrorCode::NotRegistered,
                ..
            })
        ),
        "{refused:?}"
    );
    let refused = client.fetch_bundle("bob").await;
    assert!(
        matches!(
            refused,
            Err(tessera_relay::client::ClientError::Refused {
                code: ErrorCode::NotRegistered,
                ..
            })
        ),
        "{refused:?}"
    );
    client
        .register("carol", "ik", "sk")
        .await
        .expect("register");
    let refused = client.register("mallory", "ik", "sk").await;
    assert!(
        matches!(
            refused,
            Err(tessera_relay::client::ClientError::Refused {
                code: ErrorCode::DeviceTaken,
                ..
            })
        ),
        "{refused:?}"
    );
    let refused = client.register("", "ik", "sk").await;
    assert!(
        matches!(
            refused,
            Err(tessera_relay::client::ClientError::Refused {
                code: ErrorCode::Invalid,
                ..
            })
        ),
        "{refused:?}"
    );
    let refused = client.fetch_bundle("nobody").await;
    assert!(
        matches!(
            refused,
            Err(tessera_relay::client::ClientError::Refused {
                code: ErrorCode::UnknownUser,
                ..
            })
        ),
        "{refused:?}"
    );
    // An envelope for a device of neither party stores nothing.
    let refused = client
        .send("m1", "carol", vec![env(&Identity::generate(), "x")])
        .await;
    assert!(
        matches!(
            refused,
            Err(tessera_relay::client::ClientError::Refused {
                code: ErrorCode::UnknownDevice,
                ..
            })
        ),
        "{refused:?}"
    );
    // Heartbeat, then the device removes itself and is no longer registered.
    client.ping().await.expect("pong");
    client.remove_device(None).await.expect("remove");
    let refused = client.fetch_bundle("carol").await;
    assert!(
        matches!(
            refused,
            Err(tessera_relay::client::ClientError::Refused {
                code: ErrorCode::NotRegistered,
                ..
            })
        ),
        "{refused:?}"
    );
    client.close().await;
}

async fn channel_recv(channel: &mut tessera_channel::Channel) -> Vec<u8> {
    channel.recv().await.expect("recv").expect("open").to_vec()
}

#[tokio::test]
async fn list_users_shows_only_conversations_with_presence() {
    use tessera_relay::protocol::UserPresence;
    let relay = start().await;
    let (alice_key, bob_key, carol_key) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    // Bob exists but has never connected.
    relay
        .store
        .register_device(
            &Registration {
                username: "bob",
                device: &bob_key.public_key().to_string(),
                identity_key: "ik",
                signing_key: "sk",
            },
            &Admission::default(),
        )
        .await
        .expect("bob");
    let mut alice = connect(&relay, &alice_key).await;
    alice.register("alice", "ik", "sk").await.expect("alice");
    let mut carol = connect(&relay, &carol_key).await;
    carol.register("carol", "ik", "sk").await.expect("carol");
    let presence = |name: &str, online: bool| UserPresence {
        username: name.into(),
        online,
    };

    assert_eq!(
        alice.list_users().await.expect("list"),
        vec![presence("alice", true)]
    );
    alice
        .send("m1", "bob", vec![env(&bob_key, "x")])
        .await
        .expect("send");
    assert_eq!(
        alice.list_users().await.expect("list"),
        vec![presence("alice", true), presence("bob", false)]
    );
    let mut bob = connect(&relay, &bob_key).await;
    bob.ping().await.expect("ping"); // the relay has counted bob's channel once it answers
    assert_eq!(
        alice.list_users().await.expect("list"),
        vec![presence("alice", true), presence("bob", true)]
    );
    // Carol has no conversation: she sees only herself.
    assert_eq!(
        carol.list_users().await.expect("list"),
        vec![presence("carol", true)]
    );
    bob.close().await;
    alice.close().await;
    carol.close().await;
}

#[tokio::test]
async fn a_connection_over_its_request_rate_is_told_to_slow_down() {
    let config = tessera_relay::server::RelayConfig {
        requests_per_second: 0.001,
        request_burst: 3,
        ..Default::default()
    };
    let relay = common::start_with(tempfile::tempdir().expect("tempdir"), config).await;
    let mut client = connect(&relay, &Identity::generate()).await;
    for _ in 0..3 {
        client.ping().await.expect("within the burst");
    }
    let refused = client.ping().await;
    assert!(
        matches!(
            refused,
            Err(tessera_relay::client::ClientError::Refused {
                code: ErrorCode::RateLimited,
                ..
            })
        ),
        "{refused:?}"
    );
    // The connection stays open: a fresh connection has its own budget.
    let mut other = connect(&relay, &Identity::generate()).await;
    other.ping().await.expect("own budget");
    client.close().await;
    other.close().await;
}

#[tokio::test]
async fn a_stream_of_malformed_frames_closes_the_channel() {
    let relay = start().await;
    let mut channel = connector()
        .connect(&relay.url, relay.key, &Identity::generate())
        .await
        .expect("connect");
    let limit = tessera_relay::server::RelayConfig::default().max_malformed;
    for _ in 0..limit {
        channel.send(b"\x00garbage".to_vec()).await.expect("send");
        let reply = decode_reply(&channel_recv(&mut channel).await).expect("reply");
        assert!(
            matches!(
                reply,
                Reply::Error {
                    code: ErrorCode::Malformed,
                    ..
                }
            ),
            "{reply:?}"
        );
    }
    // After the last error reply the relay closes: the next receive ends.
    assert!(!matches!(channel.recv().await, Ok(Some(_))));
}

/// `what`, which must finish within 10 s.
async fn within<T>(what: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), what)
        .await
        .expect("finished within 10 s")
}

/// A device removed by another device of its account — a lost phone still connected — is told why and
/// disconnected on every channel it has open; the account's other devices carry on, and nothing more is
/// stored for it.
#[tokio::test]
async fn a_removed_device_is_told_and_disconnected() {
    let relay = start().await;
    let (laptop_id, phone_id) = (Identity::generate(), Identity::generate());
    let mut laptop = connect(&relay, &laptop_id).await;
    laptop
        .register("alice", "ik-laptop", "sk-laptop")
        .await
        .expect("register the laptop");
    let (link, _) = laptop.link_device().await.expect("link token");
    let mut phone = connect(&relay, &phone_id).await;
    phone
        .register_with("alice", "ik-phone", "sk-phone", Some(&link))
        .await
        .expect("register the phone");
    // A second channel of the phone, listening too.
    let mut phone_again = connect(&relay, &phone_id).await;
    phone_again.ping().await.expect("pong");

    let phone_device = phone_id.public_key().to_string();
    laptop
        .remove_device(Some(phone_device.clone()))
        .await
        .expect("remove the phone");
    for channel in [&mut phone, &mut phone_again] {
        let told = within(channel.next_delivery()).await;
        assert!(
            matches!(
                &told,
                Err(ClientError::Refused { code: ErrorCode::NotRegistered, message })
                    if message.contains("removed")
            ),
            "{told:?}"
        );
        // Then the relay closes the channel.
        let closed = within(channel.next_delivery()).await;
        assert!(closed.is_err(), "{closed:?}");
    }
    // The laptop carries on; a copy for the phone is refused as for any stranger's device.
    laptop.ping().await.expect("the laptop is untouched");
    let refused = laptop
        .send("m1", "alice", vec![env(&phone_id, "for the phone")])
        .await;
    assert!(
        matches!(
            &refused,
            Err(ClientError::Refused {
                code: ErrorCode::UnknownDevice,
                ..
            })
        ),
        "{refused:?}"
    );
    laptop.close().await;
    phone.close().await;
    phone_again.close().await;
}
