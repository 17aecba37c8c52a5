//! Limits and bad input over real channels: oversized fields get `invalid` replies, an oversized frame
//! closes the channel, a connection that keeps exceeding its rate is closed, and an idle connection is
//! closed while one that sends heartbeats keeps receiving.

mod common;

use std::time::Duration;

use common::{connect, start, start_with};
use tessera_channel::{ChannelConfig, Connector, Identity};
use tessera_relay::client::ClientError;
use tessera_relay::protocol::codec::{decode_reply, encode_request};
use tessera_relay::protocol::{Envelope, ErrorCode, MessageRef, PreKey, Reply, Request};
use tessera_relay::server::RelayConfig;
use tessera_relay::store::Store;
use tessera_session::{Registry, RegistryConfig};

/// Safety net only: every wait below ends on an event long before this.
const NET: Duration = Duration::from_secs(20);

fn invalid<T: std::fmt::Debug>(result: Result<T, ClientError>) {
    assert!(
        matches!(
            result,
            Err(ClientError::Refused {
                code: ErrorCode::Invalid,
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn oversized_fields_are_refused_and_an_oversized_frame_closes() {
    let relay = start().await;
    let me = Identity::generate();
    let mut client = connect(&relay, &me).await;
    invalid(client.register(&"u".repeat(65), "ik", "sk").await);
    invalid(client.register("ctl\u{7}", "ik", "sk").await);
    invalid(client.register("alice", &"k".repeat(257), "sk").await);
    client.register("alice", "ik", "sk").await.expect("alice");
    let key = |i: usize| PreKey {
        key_id: i.to_string(),
        key: "k".into(),
    };
    invalid(
        client
            .publish_prekeys((0..101).map(key).collect(), None)
            .await,
    );
    // At most 500 unclaimed one-time keys per device: the sixth hundred is refused whole.
    for batch in 0..5 {
        client
            .publish_prekeys((batch * 100..batch * 100 + 100).map(key).collect(), None)
            .await
            .expect("within the cap");
    }
    invalid(client.publish_prekeys(vec![key(500)], None).await);
    client
        .publish_prekeys(vec![key(0)], None)
        .await
        .expect("an id already stored adds nothing");
    let envelope = Envelope {
        device: me.public_key().to_string(),
        ciphertext: "c".into(),
    };
    invalid(client.send("m", "alice", vec![envelope.clone(); 65]).await);
    invalid(client.send("m", "alice", Vec::new()).await);
    let acks = vec![
        MessageRef {
            from_device: "d".into(),
            message_id: "m".into(),
            seq: 1,
        };
        1001
    ];
    invalid(client.ack(acks).await);
    // Still open and working after every refusal.
    client.ping().await.expect("open");
    client.close().await;

    // A frame over the channel's 1 MiB message limit: the relay's channel closes.
    let big = Connector::new(
        Registry::new(RegistryConfig::new("big-client")),
        ChannelConfig {
            max_message_size: 4 << 20,
            ..ChannelConfig::default()
        },
    );
    let mut channel = big
        .connect(&relay.url, relay.key, &Identity::generate())
        .await
        .expect("connect");
    let frame = encode_request(&Request::Send {
        req: 1,
        message_id: "m".into(),
        to: "alice".into(),
        envelopes: vec![Envelope {
            device: me.public_key().to_string(),
            ciphertext: "c".repeat(2 << 20),
        }],
    });
    // The send itself may already fail when the close arrives first; either way the channel ends.
    let _ = channel.send(frame).await;
    let ended = tokio::time::timeout(NET, channel.recv())
        .await
        .expect("ends");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    assert!(
        relay
            .store
            .pending(&me.public_key().to_string(), 0, 10)
            .await
            .expect("pending")
            .is_empty(),
        "nothing of the oversized send was stored"
    );
}

#[tokio::test]
async fn a_connection_that_keeps_exceeding_its_rate_is_closed() {
    let config = RelayConfig {
        requests_per_second: 0.001,
        request_burst: 2,
        max_rate_limited: 5,
        ..RelayConfig::default()
    };
    let relay = start_with(tempfile::tempdir().expect("dir"), config).await;
    let mut channel = common::connector()
        .connect(&relay.url, relay.key, &Identity::generate())
        .await
        .expect("connect");
    let mut codes = Vec::new();
    for req in 0..7u64 {
        if channel
            .send(encode_request(&Request::Ping { req }))
            .await
            .is_err()
        {
            break;
        }
        match tokio::time::timeout(NET, channel.recv())
            .await
            .expect("reply or close")
        {
            Ok(Some(bytes)) => codes.push(decode_reply(&bytes).expect("reply")),
            _ => break,
        }
    }
    // Two pongs within the burst, then five rate_limited replies, then the relay closes.
    assert_eq!(codes.len(), 7, "{codes:?}");
    assert!(codes[..2].iter().all(|r| matches!(r, Reply::Pong { .. })));
    assert!(codes[2..].iter().all(|r| matches!(
        r,
        Reply::Error {
            code: ErrorCode::RateLimited,
            ..
        }
    )));
    let ended = tokio::time::timeout(NET, channel.recv())
        .await
        .expect("closed");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
}

#[tokio::test]
async fn idle_connections_close_and_heartbeats_keep_a_listener_open() {
    let config = RelayConfig {
        idle_timeout: Duration::from_millis(300),
        ..RelayConfig::default()
    };
    let relay = start_with(tempfile::tempdir().expect("dir"), config).await;
    let (bob_key, alice_key, idle_key) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let mut bob = connect(&relay, &bob_key).await;
    bob.register("bob", "ik", "sk").await.expect("bob");
    let mut idle = common::connector()
        .connect(&relay.url, relay.key, &idle_key)
        .await
        .expect("idle");
    // Bob listens with a heartbeat well inside the idle timeout.
    let listening = tokio::spawn(async move {
        let delivery = bob
            .next_delivery_with_heartbeat(Duration::from_millis(50))
            .await;
        (bob, delivery)
    });
    // The idle connection is closed by the relay: the idle timeout has passed for bob too.
    let ended = tokio::time::timeout(NET, idle.recv())
        .await
        .expect("closed");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    let mut alice = connect(&relay, &alice_key).await;
    alice.register("alice", "ik", "sk").await.expect("alice");
    let envelope = Envelope {
        device: bob_key.public_key().to_string(),
        ciphertext: "c".into(),
    };
    alice.send("m1", "bob", vec![envelope]).await.expect("send");
    let (bob, delivery) = tokio::time::timeout(NET, listening)
        .await
        .expect("delivered")
        .expect("task");
    assert_eq!(delivery.expect("still open").message_id, "m1");
    bob.close().await;
    alice.close().await;
}
