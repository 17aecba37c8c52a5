//! kill -9 of the relay process while messages are in flight, then a restart on the same data: every
//! message the relay acknowledged reaches the recipient, once after deduplication by message id.

use std::collections::HashSet;
use std::process::Stdio;

use tessera_channel::{ChannelConfig, Connector, Identity, PublicKey};
use tessera_relay::client::RelayClient;
use tessera_relay::protocol::Envelope;
use tessera_session::{Registry, RegistryConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

async fn launch(dir: &std::path::Path) -> (Child, String, PublicKey) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera-relay-test-server"))
        .arg(dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn relay");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .expect("ready line");
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("ready"), "{line}");
    let url = parts.next().expect("url").to_owned();
    let key: PublicKey = parts.next().expect("key").parse().expect("key");
    (child, url, key)
}

async fn connect(url: &str, key: PublicKey, me: &Identity) -> RelayClient {
    let connector = Connector::new(
        Registry::new(RegistryConfig::new("crash-test")),
        ChannelConfig::default(),
    );
    RelayClient::new(connector.connect(url, key, me).await.expect("connect"))
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_9() {
    const TOTAL: usize = 1000;
    const KILL_AFTER: usize = 400;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, url, key) = launch(dir.path()).await;
    let (alice_key, bob_key) = (Identity::generate(), Identity::generate());
    let bob_id = bob_key.public_key().to_string();
    let mut bob = connect(&url, key, &bob_key).await;
    bob.register("bob", "ik", "sk").await.expect("bob");
    bob.close().await;
    let mut alice = connect(&url, key, &alice_key).await;
    alice.register("alice", "ik", "sk").await.expect("alice");

    // Alice sends one message after another; the process is killed while she is mid-stream.
    let mut acknowledged = HashSet::new();
    let mut retried = None;
    for i in 0..TOTAL {
        if i == KILL_AFTER {
            child.start_kill().expect("kill -9");
        }
        let id = format!("m{i:04}");
        let envelope = Envelope {
            device: bob_id.clone(),
            ciphertext: format!("c{i}"),
        };
        match alice.send(&id, "bob", vec![envelope]).await {
            Ok(_) => {
                acknowledged.insert(id);
            }
            Err(_) => {
                retried = Some(i);
                break;
            }
        }
    }
    let _ = child.wait().await;
    assert!(acknowledged.len() >= KILL_AFTER, "{}", acknowledged.len());
    let first_unacked = retried.expect("the kill interrupted the stream");

    // Restart on the same data; Alice retries from the first unacknowledged message to the end.
    let (_child, url, key2) = launch(dir.path()).await;
    assert_eq!(key, key2, "same identity after restart");
    let mut alice = connect(&url, key, &alice_key).await;
    for i in first_unacked..TOTAL {
        let id = format!("m{i:04}");
        let envelope = Envelope {
            device: bob_id.clone(),
            ciphertext: format!("c{i}"),
        };
        alice
            .send(&id, "bob", vec![envelope])
            .await
            .expect("send after restart");
        acknowledged.insert(id);
    }
    assert_eq!(acknowledged.len(), TOTAL);

    let mut bob = connect(&url, key, &bob_key).await;
    let mut received = HashSet::new();
    let mut last_seq = 0;
    while received.len() < TOTAL {
        let delivery = bob.next_delivery().await.expect("deliver");
        assert!(delivery.seq > last_seq);
        last_seq = delivery.seq;
        assert_eq!(
            delivery.ciphertext,
            format!(
                "c{}",
                &delivery.message_id[1..]
                    .trim_start_matches('0')
                    .parse::<usize>()
                    .unwrap_or(0)
            )
        );
        assert!(
            received.insert(delivery.message_id.clone()),
            "stored twice: {}",
            delivery.message_id
        );
        bob.ack(vec![delivery.reference()]).await.expect("ack");
    }
    assert_eq!(received, acknowledged);
    bob.close().await;
    alice.close().await;
}
