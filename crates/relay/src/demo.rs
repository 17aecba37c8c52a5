//! The demo behind `tessera demo` (issue 7, item 8): a relay on loopback over a SQLite file in `data_dir`,
//! two users, messages to a recipient who is offline and then comes online, and a reply — all end to end.
//! Returns what each side saw, line by line, for the CLI to print.

use std::path::Path;
use std::time::Duration;

use tessera_channel::{AnyKey, ChannelConfig, ChannelError, Connector, Identity, Server, serve};
use tessera_session::{Registry, RegistryConfig};

use crate::chat::{ChatDevice, ChatError};
use crate::client::RelayClient;
use crate::e2e::OlmDevice;
use crate::server::{Relay, RelayConfig};
use crate::store::{SqliteStore, Store, StoreError};

/// A demo failure.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The relay's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Binding the loopback port failed.
    #[error("cannot listen on loopback: {0}")]
    Io(#[from] std::io::Error),
    /// A channel failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// A chat operation failed.
    #[error(transparent)]
    Chat(#[from] ChatError),
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// Runs the demo with the relay's database in `data_dir` (which must exist).
pub async fn run(data_dir: &Path) -> Result<Vec<String>, DemoError> {
    let mut lines = Vec::new();
    let store = SqliteStore::open(data_dir.join("relay.db")).await?;
    let identity = Identity::generate();
    let relay_key = identity.public_key();
    let registry = Registry::new(RegistryConfig::new("relay-demo"));
    let (server, listener) = Server::new(identity, AnyKey, ChannelConfig::default(), registry);
    let serving = serve(([127, 0, 0, 1], 0).into(), &server).await?;
    let url = format!("ws://{}/", serving.local_addr());
    tokio::spawn(Relay::new(store.clone(), RelayConfig::default()).run(listener));
    lines.push(format!("relay: listening on {url}, key {relay_key}"));

    let connector = Connector::new(
        Registry::new(RegistryConfig::new("relay-demo-client")),
        ChannelConfig::default(),
    );
    let (alice_key, bob_key) = (Identity::generate(), Identity::generate());
    let connect = |key: &Identity| {
        let connector = connector.clone();
        let (url, key) = (url.clone(), key.clone());
        async move {
            connector
                .connect(&url, relay_key, &key)
                .await
                .map(RelayClient::new)
        }
    };

    let bob = ChatDevice::register(
        connect(&bob_key).await?,
        "bob",
        bob_key.public_key().to_string(),
        OlmDevice::new(),
        10,
    )
    .await?;
    lines.push(
        "bob: registered, published 10 one-time keys and a fallback key, going offline".into(),
    );
    let bob_olm = bob.close().await;

    let mut alice = ChatDevice::register(
        connect(&alice_key).await?,
        "alice",
        alice_key.public_key().to_string(),
        OlmDevice::new(),
        10,
    )
    .await?;
    for message in [
        "hello bob, you are offline",
        "this waits for you, encrypted",
    ] {
        alice.send_text("bob", message).await?;
        lines.push(format!(
            "alice -> bob (offline): {message:?} stored by the relay as ciphertext"
        ));
    }

    let mut bob = ChatDevice::resume(
        connect(&bob_key).await?,
        "bob",
        bob_key.public_key().to_string(),
        bob_olm,
    );
    lines.push("bob: back online".into());
    for _ in 0..2 {
        let message = bob.receive().await?;
        lines.push(format!(
            "bob <- {}: {:?} (decrypted, acknowledged)",
            message.from_user,
            text(&message.body)
        ));
    }
    bob.send_text("alice", "got both, thanks").await?;
    let reply = alice.receive().await?;
    lines.push(format!(
        "alice <- {}: {:?}",
        reply.from_user,
        text(&reply.body)
    ));

    bob.close().await;
    alice.close().await;
    let mut queued = 0;
    for key in [&alice_key, &bob_key] {
        queued += store
            .pending(&key.public_key().to_string(), 0, 1000)
            .await?
            .len();
    }
    serving.shutdown(Duration::from_secs(1)).await;
    store.close().await;
    lines.push(format!("relay: stopped; {queued} message(s) left queued"));
    Ok(lines)
}
