//! Two users and a second device end to end through `ChatDevice`: offline start, fan-out to the
//! recipient's devices and a copy to the sender's other device, real decryption everywhere, a resumed
//! device from sealed state.

mod common;

use common::{connect, start};
use tessera_channel::Identity;
use tessera_relay::chat::ChatDevice;
use tessera_relay::e2e::OlmDevice;
use tessera_relay::e2e::state::StateKey;

async fn device(
    relay: &common::TestRelay,
    user: &str,
    key: &Identity,
    link: Option<&str>,
) -> ChatDevice {
    let client = connect(relay, key).await;
    ChatDevice::register_with(
        client,
        user,
        key.public_key().to_string(),
        OlmDevice::new(),
        10,
        link,
    )
    .await
    .expect("register")
}

#[tokio::test]
async fn fan_out_offline_start_and_resume() {
    let relay = start().await;
    let (a1, a2, b1, b2) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    // Bob's two devices register and go offline, keeping their sealed state.
    let key = StateKey::generate();
    let mut sealed = Vec::new();
    let mut link = None;
    for (identity, name) in [(&b1, "b1"), (&b2, "b2")] {
        let mut bob = device(&relay, "bob", identity, link.as_deref().map(String::as_str)).await;
        // The first device mints the link token that lets the second join the account.
        link = Some(bob.client().link_device().await.expect("link").0);
        sealed.push((identity.clone(), name, bob.seal(&key).expect("seal")));
        bob.close().await;
    }
    let mut alice = device(&relay, "alice", &a1, None).await;
    let (link, _) = alice.client().link_device().await.expect("link");
    let mut alice_phone = device(&relay, "alice", &a2, Some(&link)).await;

    let first = alice
        .send_text("bob", "hi bob, from alice's laptop")
        .await
        .expect("send");
    let second = alice.send_text("bob", "second line").await.expect("send");

    // Alice's phone got the copies.
    for (id, text) in [
        (&first, "hi bob, from alice's laptop"),
        (&second, "second line"),
    ] {
        let copy = alice_phone.receive().await.expect("copy");
        assert_eq!(
            (&copy.message_id, copy.body.as_slice()),
            (id, text.as_bytes())
        );
    }

    // Each of Bob's devices resumes from its sealed state and reads both, in order.
    for (identity, _name, state) in sealed {
        let olm = OlmDevice::unseal(&state, &key).expect("unseal");
        let client = connect(&relay, &identity).await;
        let mut bob = ChatDevice::resume(client, "bob", identity.public_key().to_string(), olm);
        let one = bob.receive().await.expect("one");
        let two = bob.receive().await.expect("two");
        assert_eq!(one.body, b"hi bob, from alice's laptop");
        assert_eq!(two.body, b"second line");
        assert_eq!(
            (one.from_user.as_str(), one.message_id.as_str()),
            ("alice", first.as_str())
        );
        // Bob answers from this device; both of Alice's devices get it.
        let reply = format!("ack from {}", bob_name(&identity, &b1));
        bob.send_text("alice", &reply).await.expect("reply");
        for receiver in [&mut alice, &mut alice_phone] {
            let got = receiver.receive().await.expect("reply");
            assert_eq!(got.body, reply.as_bytes());
        }
        bob.close().await;
    }
    alice.close().await;
    alice_phone.close().await;
}

fn bob_name(identity: &Identity, b1: &Identity) -> &'static str {
    if identity.public_key() == b1.public_key() {
        "b1"
    } else {
        "b2"
    }
}

#[tokio::test]
async fn two_hundred_olm_clients_in_a_ring_each_decrypt_only_their_own() {
    const CLIENTS: usize = 200;
    const EACH: usize = 5;
    let relay = std::sync::Arc::new(start().await);
    let keys: std::sync::Arc<Vec<Identity>> =
        std::sync::Arc::new((0..CLIENTS).map(|_| Identity::generate()).collect());
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (relay, keys, barrier) = (relay.clone(), keys.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let client = connect(&relay, &keys[i]).await;
            let mut me = ChatDevice::register(
                client,
                &format!("user{i}"),
                keys[i].public_key().to_string(),
                OlmDevice::new(),
                2,
            )
            .await
            .expect("register");
            barrier.wait().await; // every recipient exists
            let to = (i + 1) % CLIENTS;
            for n in 0..EACH {
                me.send_text(&format!("user{to}"), &format!("{n} for {to} from {i}"))
                    .await
                    .expect("send");
            }
            let from = (i + CLIENTS - 1) % CLIENTS;
            for n in 0..EACH {
                let message = me.receive().await.expect("receive");
                assert_eq!(
                    message.body,
                    format!("{n} for {i} from {from}").as_bytes(),
                    "misdelivered or out of order"
                );
                assert_eq!(message.from_device, keys[from].public_key().to_string());
                assert_eq!(message.from_user, format!("user{from}"));
            }
            me.close().await;
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
}

#[tokio::test]
async fn one_time_keys_are_topped_up_when_half_are_claimed() {
    let relay = start().await;
    let bob_key = Identity::generate();
    let mut bob = device(&relay, "bob", &bob_key, None).await;
    // Registered with 10; eight claimed by other users' first contact.
    for i in 0..8 {
        let other = Identity::generate();
        let mut them = device(&relay, &format!("u{i}"), &other, None).await;
        let bundle = them.client().fetch_bundle("bob").await.expect("bundle");
        assert!(bundle[0].one_time_key.is_some());
        them.close().await;
    }
    assert_eq!(bob.client().count_prekeys().await.expect("count"), 2);
    assert_eq!(bob.replenish(10).await.expect("replenish"), 8);
    assert_eq!(bob.client().count_prekeys().await.expect("count"), 10);
    assert_eq!(bob.replenish(10).await.expect("enough"), 0);
    // The keys on the relay still start real sessions.
    let carol_key = Identity::generate();
    let mut carol = device(&relay, "carol", &carol_key, None).await;
    carol
        .send_text("bob", "from a new key")
        .await
        .expect("send");
    assert_eq!(
        bob.receive().await.expect("receive").body,
        b"from a new key"
    );
    bob.close().await;
    carol.close().await;
}
