//! kill -9 of the relay process while Olm-encrypted messages are in flight both ways (a sender
//! streaming, a recipient receiving live), then a restart on the same data. The recipient keeps its state
//! only in its sealed state file: it saves after each message and before acknowledging, and after the
//! kill it starts again from the file. Every message the relay acknowledged to the sender reaches the
//! recipient's application exactly once, in order, decrypted.

use std::process::Stdio;
use std::time::Duration;

use tessera_channel::{ChannelConfig, Connector, Identity, PublicKey};
use tessera_relay::chat::ChatDevice;
use tessera_relay::client::RelayClient;
use tessera_relay::e2e::OlmDevice;
use tessera_relay::e2e::state::StateKey;
use tessera_relay::state_file::{Profile, StateFile, Unlock};
use tessera_session::{Registry, RegistryConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

const TOTAL: usize = 400;
const KILL_AFTER: usize = 150;
const STATE_KEY: [u8; 32] = [9; 32];

async fn launch(dir: &std::path::Path) -> (Child, String, PublicKey) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera-relay-test-server"))
        .arg(dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn relay");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .await
        .expect("ready line");
    let mut parts = line.split_whitespace().skip(1);
    let url = parts.next().expect("url").to_owned();
    let key: PublicKey = parts.next().expect("key").parse().expect("key");
    (child, url, key)
}

async fn connect(url: &str, key: PublicKey, me: &Identity) -> Option<RelayClient> {
    let connector = Connector::new(
        Registry::new(RegistryConfig::new("crash-olm")),
        ChannelConfig::default(),
    );
    connector
        .connect(url, key, me)
        .await
        .ok()
        .map(RelayClient::new)
}

/// The relay's current address; replaced after the restart.
type Address = watch::Receiver<(String, PublicKey)>;

/// Connects to the current address, waiting for a new one while the relay is down.
async fn reconnect(address: &mut Address, me: &Identity) -> RelayClient {
    loop {
        let (url, key) = address.borrow_and_update().clone();
        if let Some(client) = connect(&url, key, me).await {
            return client;
        }
        address.changed().await.expect("relay address");
    }
}

fn unlock() -> Unlock {
    Unlock::Key(StateKey::from_bytes(STATE_KEY))
}

#[tokio::test]
async fn olm_messages_and_sealed_client_state_survive_kill_9() {
    let dir = tempfile::tempdir().expect("relay dir");
    let client_dir = tempfile::tempdir().expect("client dir");
    let bob_state = client_dir.path().join("bob.state");
    let (mut child, url, key) = launch(dir.path()).await;
    let (address_tx, address) = watch::channel((url.clone(), key));
    let (alice_key, bob_key) = (Identity::generate(), Identity::generate());

    // Bob registers and saves his sealed state; from here on it is his only memory.
    let bob = ChatDevice::register(
        connect(&url, key, &bob_key).await.expect("bob"),
        "bob",
        bob_key.public_key().to_string(),
        OlmDevice::new(),
        20,
    )
    .await
    .expect("register bob");
    let profile = Profile {
        server_url: url.clone(),
        server_key: key.to_string(),
        username: "bob".into(),
        identity: bob_key.clone(),
    };
    let file = StateFile::create(&bob_state, unlock()).expect("state file");
    file.save(&profile, &bob.close().await).expect("save");

    let mut alice = ChatDevice::register(
        connect(&url, key, &alice_key).await.expect("alice"),
        "alice",
        alice_key.public_key().to_string(),
        OlmDevice::new(),
        20,
    )
    .await
    .expect("register alice");

    // Bob receives live: decrypt, save the sealed state, hand to the application, acknowledge.
    let mut bob_address = address.clone();
    let receiving = tokio::spawn(async move {
        let mut application: Vec<String> = Vec::new();
        let mut restarts = 0;
        while application.len() < TOTAL {
            let (file, state) = StateFile::open(&bob_state, unlock()).expect("open state");
            let client = reconnect(&mut bob_address, &state.profile.identity).await;
            let mut bob = ChatDevice::resume(
                client,
                "bob",
                state.profile.identity.public_key().to_string(),
                state.olm,
            );
            while application.len() < TOTAL {
                let Ok(message) = bob.receive_unacked(None).await else {
                    break;
                };
                file.save(&state.profile, bob.olm()).expect("save state");
                application.push(String::from_utf8(message.body.clone()).expect("utf-8"));
                if bob.ack(&message).await.is_err() {
                    break;
                }
            }
            // Start again from the file, as a restarted client would.
            if application.len() < TOTAL {
                restarts += 1;
            }
            drop(bob);
        }
        (application, restarts)
    });

    // Alice streams; the relay is killed mid-stream; she retries the interrupted send under its id.
    let (killed_tx, killed) = tokio::sync::oneshot::channel();
    let (dead_tx, dead) = tokio::sync::oneshot::channel::<()>();
    let mut alice_address = address.clone();
    let sending = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut killed_tx = Some(killed_tx);
        let mut dead = Some(dead);
        let mut retries = 0;
        for i in 0..TOTAL {
            let text = format!("olm message {i:04}");
            let id = format!("m{i:04}");
            if i == KILL_AFTER
                && let Some(tx) = killed_tx.take()
            {
                let _ = tx.send(());
            }
            // Sends stay in flight around the kill, but the stream cannot end before it.
            if i == KILL_AFTER + 50
                && let Some(dead) = dead.take()
            {
                let _ = dead.await;
            }
            while alice.send_text_as("bob", &text, &id).await.is_err() {
                retries += 1;
                let client = reconnect(&mut alice_address, &alice_key).await;
                alice.reconnect(client);
            }
            acknowledged.push(text);
        }
        alice.close().await;
        (acknowledged, retries)
    });

    killed.await.expect("kill signal");
    child.start_kill().expect("kill -9");
    let _ = child.wait().await;
    let _ = dead_tx.send(());
    let (child, new_url, new_key) = launch(dir.path()).await;
    assert_eq!(new_key, key, "same identity after restart");
    address_tx
        .send((new_url, new_key))
        .expect("publish address");

    let (acknowledged, retries) = tokio::time::timeout(Duration::from_secs(120), sending)
        .await
        .expect("sender finishes")
        .expect("sender task");
    let (application, restarts) = tokio::time::timeout(Duration::from_secs(120), receiving)
        .await
        .expect("recipient finishes")
        .expect("recipient task");
    assert!(retries >= 1, "the kill interrupted the sender");
    assert!(restarts >= 1, "the kill interrupted the recipient");
    assert_eq!(application.len(), TOTAL);
    assert_eq!(application, acknowledged, "each message once, in order");
    drop(child);
}
