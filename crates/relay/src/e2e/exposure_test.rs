//! What the relay stores and what it sends, inspected whole: two users (one with two devices) exchange
//! messages end to end, one of them offline at first; every frame the relay sent to every client (as
//! recorded after the channel's decryption) and every byte of its database files are scanned for the
//! plaintexts and for every private key — the channel keys and the Olm identity, signing and one-time
//! keys — in raw, hex and base64 form. (A unit test, so it can read the Olm private keys to look for them.)

use tessera_channel::{AnyKey, ChannelConfig, Connector, Identity, Server, serve};
use tessera_session::{Registry, RegistryConfig};

use super::OlmDevice;
use crate::chat::ChatDevice;
use crate::client::RelayClient;
use crate::server::{Relay, RelayConfig};
use crate::store::SqliteStore;

const SECRETS: [&str; 4] = [
    "plaintext-one: meet at the north gate",
    "plaintext-two: the code is 4417",
    "plaintext-three: reply from bob",
    "plaintext-four: to myself and bob",
];

/// Every private key of an Olm account, raw.
fn olm_private_keys(olm: &OlmDevice) -> Vec<Vec<u8>> {
    let pickle = serde_json::to_value(olm.account.pickle()).expect("pickle");
    let mut keys = Vec::new();
    let numbers = |value: &serde_json::Value| {
        let mut bytes = Vec::new();
        collect(value, &mut bytes);
        bytes
    };
    for field in ["diffie_hellman_key", "signing_key"] {
        let bytes = numbers(&pickle[field]);
        assert!(bytes.len() >= 32, "{field}: {bytes:?}");
        keys.extend(bytes.chunks(32).map(<[u8]>::to_vec));
    }
    if let Some(map) = pickle["one_time_keys"]["private_keys"].as_object() {
        for value in map.values() {
            keys.push(numbers(value));
        }
    }
    keys
}

fn collect(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(byte) = n.as_u64().and_then(|n| u8::try_from(n).ok()) {
                out.push(byte);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect(v, out)),
        _ => {}
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        vodozemac::base64_encode(secret).into_bytes(),
    ]
}

#[tokio::test]
async fn nothing_sent_or_stored_holds_a_plaintext_or_a_private_key() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("store");
    let identity = Identity::generate();
    let relay_key = identity.public_key();
    let (server, listener) = Server::new(
        identity,
        AnyKey,
        ChannelConfig::default(),
        Registry::new(RegistryConfig::new("exposure")),
    );
    let serving = serve(([127, 0, 0, 1], 0).into(), &server)
        .await
        .expect("serve");
    let url = format!("ws://{}/", serving.local_addr());
    tokio::spawn(Relay::new(store.clone(), RelayConfig::default()).run(listener));
    let connector = Connector::new(
        Registry::new(RegistryConfig::new("exposure-client")),
        ChannelConfig::default(),
    );
    let connect = |key: Identity| {
        let (connector, url) = (connector.clone(), url.clone());
        async move {
            let mut client =
                RelayClient::new(connector.connect(&url, relay_key, &key).await.expect("c"));
            client.record(16 << 20);
            client
        }
    };
    let (bob_key, a1_key, a2_key) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let id = |key: &Identity| key.public_key().to_string();
    let mut sent = Vec::new();
    let mut olm_keys = Vec::new();

    // Bob registers and goes offline.
    let bob = ChatDevice::register(
        connect(bob_key.clone()).await,
        "bob",
        id(&bob_key),
        OlmDevice::new(),
        5,
    )
    .await
    .expect("bob");
    sent.extend(bob.client_ref().recorded().to_vec());
    let bob_olm = bob.close().await;

    // Alice's laptop registers and links her phone.
    let mut a1 = ChatDevice::register(
        connect(a1_key.clone()).await,
        "alice",
        id(&a1_key),
        OlmDevice::new(),
        5,
    )
    .await
    .expect("a1");
    let (link, _) = a1.client().link_device().await.expect("link");
    let mut a2 = ChatDevice::register_with(
        connect(a2_key.clone()).await,
        "alice",
        id(&a2_key),
        OlmDevice::new(),
        5,
        Some(&link),
    )
    .await
    .expect("a2");
    a1.send_text("bob", SECRETS[0]).await.expect("send");
    a1.send_text("bob", SECRETS[1]).await.expect("send");

    // Bob comes back, reads both, replies; alice's devices read everything.
    let mut bob = ChatDevice::resume(connect(bob_key.clone()).await, "bob", id(&bob_key), bob_olm);
    for secret in &SECRETS[..2] {
        assert_eq!(bob.receive().await.expect("bob").body, secret.as_bytes());
    }
    bob.send_text("alice", SECRETS[2]).await.expect("reply");
    a2.send_text("bob", SECRETS[3])
        .await
        .expect("from the phone");
    assert_eq!(
        bob.receive().await.expect("bob").body,
        SECRETS[3].as_bytes()
    );
    assert_eq!(a1.receive().await.expect("a1").body, SECRETS[2].as_bytes());
    assert_eq!(
        a1.receive().await.expect("a1 copy").body,
        SECRETS[3].as_bytes()
    );
    for secret in [SECRETS[0], SECRETS[1], SECRETS[2]] {
        assert_eq!(a2.receive().await.expect("a2").body, secret.as_bytes());
    }

    // The scan finds what is there: a1's public identity key was stored and sent (in bob's bundle).
    let public_identity = a1.olm().identity_key();
    for device in [&bob, &a1, &a2] {
        sent.extend(device.client_ref().recorded().to_vec());
        olm_keys.extend(olm_private_keys(device.olm()));
    }
    let deliveries = sent
        .iter()
        .filter(|f| contains(f, br#""type":"deliver""#))
        .count();
    // bob 3, the laptop 2 (reply, copy of the phone's send), the phone 3 (copies of two sends, reply).
    assert_eq!(deliveries, 8, "every delivery was recorded");
    for device in [bob, a1, a2] {
        device.close().await;
    }
    serving.shutdown(std::time::Duration::from_secs(1)).await;
    store.close().await;

    let mut stored = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        stored.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
    }
    let sent: Vec<u8> = sent.concat();
    assert!(contains(&stored, public_identity.as_bytes()));
    assert!(contains(&sent, public_identity.as_bytes()));
    let mut secrets: Vec<Vec<u8>> = SECRETS.iter().map(|s| s.as_bytes().to_vec()).collect();
    for key in [&bob_key, &a1_key, &a2_key] {
        secrets.extend(forms(key.expose_private()));
    }
    for key in &olm_keys {
        assert_eq!(key.len(), 32);
        secrets.extend(forms(key));
    }
    assert!(
        olm_keys.len() >= 6 * 2,
        "identity and signing keys of three devices, and more"
    );
    for secret in &secrets {
        assert!(!contains(&sent, secret), "the relay sent a secret");
        assert!(!contains(&stored, secret), "the relay stored a secret");
    }
}
