//! A bare relay process for crash tests: `tessera-relay-test-server DATA_DIR` serves on an ephemeral
//! loopback port with the identity in `DATA_DIR/relay.key` (created on first run) and the database in
//! `DATA_DIR/relay.db`, and prints one line `ready <url> <server key>` once it accepts connections.
//! The real command is `tessera relay serve` (crates/tessera).

use std::path::PathBuf;

use tessera_channel::{AnyKey, ChannelConfig, Identity, Server, serve};
use tessera_relay::server::{Relay, RelayConfig};
use tessera_relay::store::SqliteStore;
use tessera_session::{Registry, RegistryConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .ok_or("usage: tessera-relay-test-server DATA_DIR")?,
    );
    let key_file = dir.join("relay.key");
    let identity = if key_file.exists() {
        Identity::load(&key_file)?
    } else {
        let identity = Identity::generate();
        identity.save(&key_file)?;
        identity
    };
    let store = SqliteStore::open(dir.join("relay.db")).await?;
    let key = identity.public_key();
    let (server, listener) = Server::new(
        identity,
        AnyKey,
        ChannelConfig::default(),
        Registry::new(RegistryConfig::new("relay")),
    );
    let serving = serve(([127, 0, 0, 1], 0).into(), &server).await?;
    let config = RelayConfig {
        requests_per_second: 100_000.0,
        request_burst: 100_000,
        ..RelayConfig::default()
    };
    println!("ready ws://{}/ {key}", serving.local_addr());
    Relay::new(store, config).run(listener).await;
    Ok(())
}
