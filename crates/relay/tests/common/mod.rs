//! Shared set-up: a relay on 127.0.0.1 over a SQLite file in a temporary directory.
#![allow(dead_code)]

use tessera_channel::{AnyKey, ChannelConfig, Connector, Identity, Server, Serving, serve};
use tessera_relay::client::RelayClient;
use tessera_relay::server::{Relay, RelayConfig};
use tessera_relay::store::SqliteStore;
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
    let config = RelayConfig {
        requests_per_second: 100_000.0,
        request_burst: 100_000,
        ..RelayConfig::default()
    };
    start_with(dir, config).await
}

/// Starts a relay over `dir/relay.db` with `config`.
pub async fn start_with(dir: tempfile::TempDir, config: RelayConfig) -> TestRelay {
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("open");
    let identity = Identity::generate();
    let key = identity.public_key();
    let registry = Registry::new(RegistryConfig::new("relay-test"));
    let (server, listener): (Server, _) =
        Server::new(identity, AnyKey, ChannelConfig::default(), registry);
    let serving = serve("127.0.0.1:0".parse().expect("addr"), &server)
        .await
        .expect("bind");
    let url = format!("ws://{}/", serving.local_addr());
    tokio::spawn(Relay::new(store.clone(), config).run(listener));
    TestRelay {
        url,
        key,
        store,
        serving,
        dir,
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
