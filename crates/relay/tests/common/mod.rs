//! Shared set-up: a relay on 127.0.0.1 over a SQLite file in a temporary directory.
#![allow(dead_code)]

use tessera_channel::{AnyKey, ChannelConfig, Connector, Identity, Server, Serving, serve};
use tessera_relay::client::RelayClient;
use tessera_relay::server::{Relay, RelayConfig};
use tessera_relay::store::{SqliteStore, Store};
use tessera_session::{Registry, RegistryConfig};

pub struct TestRelay {
    pub url: String,
    pub key: tessera_channel::PublicKey,
    pub store: SqliteStore,
    pub serving: Serving,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> TestRelay {
    start_in(tempfile::tempdir().expect("tempdir")).await
}

/// Starts a relay over `dir/relay.db` (existing state is kept).
pub async fn start_in(dir: tempfile::TempDir) -> TestRelay {
    start_with(dir, config()).await
}

/// Starts a relay over `dir/relay.db` with `config`.
pub async fn start_with(dir: tempfile::TempDir, config: RelayConfig) -> TestRelay {
    let store = open(&dir).await;
    serve_relay(dir, store.clone(), Relay::new(store, config)).await
}

/// Opens the store `dir/relay.db`.
pub async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open")
}

/// Serves `relay` (built by the test over `store`, the store on `dir/relay.db`) on 127.0.0.1.
pub async fn serve_relay<S: Store>(
    dir: tempfile::TempDir,
    store: SqliteStore,
    relay: Relay<S>,
) -> TestRelay {
    let identity = Identity::generate();
    let key = identity.public_key();
    let registry = Registry::new(RegistryConfig::new("relay-test"));
    let (server, listener): (Server, _) =
        Server::new(identity, AnyKey, ChannelConfig::default(), registry);
    let serving = serve("127.0.0.1:0".parse().expect("addr"), &server)
        .await
        .expect("bind");
    let url = format!("ws://{}/", serving.local_addr());
    tokio::spawn(relay.run(listener));
    TestRelay {
        url,
        key,
        store,
        serving,
        dir,
    }
}

/// The test relay's config: the rate limit lifted.
pub fn config() -> RelayConfig {
    RelayConfig {
        requests_per_second: 100_000.0,
        request_burst: 100_000,
        ..RelayConfig::default()
    }
}

pub fn connector() -> Connector {
    Connector::new(
        Registry::new(RegistryConfig::new("relay-test-client")),
        ChannelConfig::default(),
    )
}

pub async fn connect(relay: &TestRelay, identity: &Identity) -> RelayClient {
    let channel = connector()
        .connect(&relay.url, relay.key, identity)
        .await
        .expect("connect");
    RelayClient::new(channel)
}

impl TestRelay {
    /// Stops the server and closes the database, keeping the directory for a restart.
    pub async fn stop(self) -> tempfile::TempDir {
        self.serving
            .shutdown(std::time::Duration::from_secs(1))
            .await;
        self.store.close().await;
        self.dir
    }
}
