//! Shared set-up for the integration tests: an in-process server and a raw WebSocket peer.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tessera_channel::{
    Channel, ChannelConfig, ChannelError, ClientPolicy, Connector, Identity, Listener, Server,
    Serving, serve,
};
use tessera_session::{Registry, RegistryConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct TestServer {
    pub server: Server,
    pub serving: Serving,
    pub url: String,
    pub identity: Identity,
}

impl TestServer {
    pub fn registry(&self) -> &Registry {
        self.server.registry()
    }

    /// Connects through `connector` with a fresh client identity, pinning this server's key.
    pub async fn connect(&self, connector: &Connector) -> Result<Channel, ChannelError> {
        connector
            .connect(&self.url, self.identity.public_key(), &Identity::generate())
            .await
    }
}

pub fn registry(name: &'static str) -> Registry {
    let mut config = RegistryConfig::new(name);
    config.max_sessions = 20_000;
    Registry::new(config)
}

/// Starts a server on an ephemeral port; returns it with its listener (not yet accepting).
pub async fn start_with(
    policy: impl ClientPolicy,
    config: ChannelConfig,
) -> (TestServer, Listener) {
    start_with_registry(policy, config, registry("channel-test")).await
}

pub async fn start_with_registry(
    policy: impl ClientPolicy,
    config: ChannelConfig,
    registry: Registry,
) -> (TestServer, Listener) {
    let identity = Identity::generate();
    let (server, listener) = Server::new(identity.clone(), policy, config, registry);
    let serving = serve("127.0.0.1:0".parse().expect("addr"), &server)
        .await
        .expect("bind");
    let url = format!("ws://{}/", serving.local_addr());
    (
        TestServer {
            server,
            serving,
            url,
            identity,
        },
        listener,
    )
}

/// Starts an echo server.
pub async fn echo_server(config: ChannelConfig) -> TestServer {
    let (server, listener) = start_with(tessera_channel::AnyKey, config).await;
    tokio::spawn(tessera_channel::echo(listener));
    server
}

pub fn connector() -> Connector {
    Connector::new(registry("channel-test-client"), ChannelConfig::default())
}

pub type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A plain WebSocket connection, for peers that misbehave.
pub async fn raw(url: &str) -> Raw {
    tokio_tungstenite::connect_async(url).await.expect("ws").0
}

pub async fn send_raw(ws: &mut Raw, bytes: Vec<u8>) {
    ws.send(Message::Binary(bytes.into())).await.expect("send");
}

/// The next binary message, or `Err((code, reason))` when the peer closes.
pub async fn next_raw(ws: &mut Raw) -> Result<Vec<u8>, (u16, String)> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new())));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err((0, e.to_string())),
            None => return Err((0, "eof".into())),
        }
    }
}

/// Waits until the registry has no live session (or panics after `limit`).
pub async fn wait_empty(registry: &Registry, limit: Duration) {
    if tokio::time::timeout(limit, registry.wait_empty())
        .await
        .is_err()
    {
        panic!(
            "registry still has {} live sessions after {limit:?}",
            registry.len()
        );
    }
}
