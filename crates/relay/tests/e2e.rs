//! Olm end to end through the relay: a session started while the recipient is offline, real decryption
//! on the recipient's side, a reply, redelivery deduplicated, and no plaintext or private key in what
//! the relay stored.

mod common;

use common::{connect, start};
use tessera_channel::Identity;
use tessera_relay::e2e::{E2eError, OlmDevice};
use tessera_relay::protocol::DeviceBundle;

const SECRETS: [&str; 3] = [
    "hello bob, this is alice",
    "second secret from alice",
    "bob replies in secret",
];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn olm_session_with_an_offline_recipient_and_a_reply() {
    let relay = start().await;
    let (alice_key, bob_key) = (Identity::generate(), Identity::generate());
    let (mut alice_olm, mut bob_olm) = (OlmDevice::new(), OlmDevice::new());

    // Bob registers, publishes prekeys, goes offline.
    let mut bob = connect(&relay, &bob_key).await;
    bob.register("bob", &bob_olm.identity_key(), &bob_olm.signing_key())
        .await
        .expect("register bob");
    let (one_time, fallback) = bob_olm.prekeys(5);
    assert_eq!(one_time.len(), 5);
    bob.publish_prekeys(one_time, fallback)
        .await
        .expect("prekeys");
    bob.close().await;

    // Alice starts a session from Bob's bundle and sends two messages while he is offline.
    let mut alice = connect(&relay, &alice_key).await;
    alice
        .register("alice", &alice_olm.identity_key(), &alice_olm.signing_key())
        .await
        .expect("register alice");
    let bundle = alice.fetch_bundle("bob").await.expect("bundle");
    assert_eq!(bundle.len(), 1);
    for (i, secret) in SECRETS[..2].iter().enumerate() {
        let envelope = alice_olm
            .encrypt_for(&bundle[0], secret.as_bytes())
            .expect("encrypt");
        alice
            .send(&format!("m{i}"), "bob", vec![envelope])
            .await
            .expect("send");
    }

    // Nothing the relay stored holds the plaintext or a private key.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(relay.dir.path()).expect("dir") {
        stored.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
    }
    assert!(!stored.is_empty());
    for secret in SECRETS {
        assert!(!contains(&stored, secret.as_bytes()), "plaintext stored");
    }
    for identity in [&alice_key, &bob_key] {
        assert!(
            !contains(&stored, identity.expose_private()),
            "private key stored"
        );
        assert!(!contains(
            &stored,
            hex::encode(identity.expose_private()).as_bytes()
        ));
    }

    // Bob comes online and decrypts; a redelivery (reconnect before ack) is shown once.
    let mut bob = connect(&relay, &bob_key).await;
    let first = bob.next_delivery().await.expect("deliver");
    let plain = bob_olm.decrypt(&first).expect("decrypt").expect("new");
    assert_eq!(plain, SECRETS[0].as_bytes());
    bob.close().await;
    let mut bob = connect(&relay, &bob_key).await;
    let again = bob.next_delivery().await.expect("redeliver");
    assert_eq!(again.message_id, first.message_id);
    assert_eq!(bob_olm.decrypt(&again).expect("dedup"), None);
    let second = bob.next_delivery().await.expect("deliver 2");
    let plain = bob_olm.decrypt(&second).expect("decrypt").expect("new");
    assert_eq!(plain, SECRETS[1].as_bytes());
    bob.ack(vec![again.reference(), second.reference()])
        .await
        .expect("ack");

    // Bob replies on the session Alice started; Alice decrypts it.
    let alice_device = alice_key.public_key().to_string();
    let reply = bob_olm
        .encrypt_existing(&alice_device, SECRETS[2].as_bytes())
        .expect("encrypt reply");
    bob.send("r1", "alice", vec![reply]).await.expect("reply");
    let delivered = alice.next_delivery().await.expect("alice gets reply");
    let plain = alice_olm
        .decrypt(&delivered)
        .expect("decrypt reply")
        .expect("new");
    assert_eq!(plain, SECRETS[2].as_bytes());
    alice.ack(vec![delivered.reference()]).await.expect("ack");
    bob.close().await;
    alice.close().await;
}

#[tokio::test]
async fn a_changed_identity_key_is_refused() {
    let mut alice = OlmDevice::new();
    let mut bob = OlmDevice::new();
    let (one_time, fallback) = bob.prekeys(1);
    let mut bundle = DeviceBundle {
        device: "bob-device".into(),
        identity_key: bob.identity_key(),
        signing_key: bob.signing_key(),
        one_time_key: one_time.into_iter().next(),
        fallback_key: fallback,
    };
    alice
        .encrypt_for(&bundle, b"hi")
        .expect("first contact pins");
    bundle.identity_key = OlmDevice::new().identity_key();
    let refused = alice.encrypt_for(&bundle, b"hi again");
    assert!(
        matches!(refused, Err(E2eError::IdentityChanged { .. })),
        "{refused:?}"
    );
}

#[test]
fn debug_output_holds_no_key_material() {
    let device = OlmDevice::new();
    let shown = format!("{device:?}");
    assert!(shown.starts_with("OlmDevice"));
    assert!(!shown.contains("secret") && !shown.contains("private"));
}
