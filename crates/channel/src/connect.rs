//! The client side: open a WebSocket, run the handshake against a pinned server, get a [`Channel`].
//!
//! The WebSocket connection and the handshake share one deadline ([`ChannelConfig::handshake_timeout`]);
//! the handshake itself (client_hello to session_established) is one future under it. The server's key
//! is checked against the [`ServerTrust`] as soon as server_hello proves it, before client_auth reveals
//! the client's identity.

use tessera_session::{FailureReason, Registry, RegistryConfig};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::config::ChannelConfig;
use crate::error::ChannelError;
use crate::handshake::{Established, ExpectServerHello, client_hello};
use crate::identity::Identity;
use crate::policy::ServerTrust;
use crate::transport::{self, Channel};
use crate::ws::{self, WsMsg, WsSink, WsStream};

use futures_util::SinkExt;

/// Opens channels with one configuration; each channel is a session of `registry`.
#[derive(Debug, Clone)]
pub struct Connector {
    registry: Registry,
    config: ChannelConfig,
}

impl Connector {
    /// A connector whose channels are sessions of `registry`.
    pub fn new(registry: Registry, config: ChannelConfig) -> Self {
        Connector { registry, config }
    }

    /// The registry holding one session per channel.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Connects to `url` (`ws://host:port/path`), requires the server's key to satisfy `server`, and
    /// authenticates as `identity` with an empty auth payload.
    pub async fn connect(
        &self,
        url: &str,
        server: impl Into<ServerTrust>,
        identity: &Identity,
    ) -> Result<Channel, ChannelError> {
        self.connect_with_auth(url, server, identity, Vec::new())
            .await
    }

    /// Like [`Connector::connect`], with an application auth payload in client_auth.
    pub async fn connect_with_auth(
        &self,
        url: &str,
        server: impl Into<ServerTrust>,
        identity: &Identity,
        auth_payload: Vec<u8>,
    ) -> Result<Channel, ChannelError> {
        let host = host_port(url)?;
        let guard = self.registry.create("channel-client")?;
        let limit = self.config.handshake_timeout;
        let deadline = Instant::now() + limit;
        let timed_out = || ChannelError::HandshakeTimeout(limit);
        let socket = tokio::time::timeout_at(
            deadline,
            tokio_tungstenite::connect_async_with_config(
                url,
                Some(self.config.websocket_config()),
                true,
            ),
        )
        .await;
        let socket = match socket {
            Ok(Ok((socket, _response))) => socket,
            Ok(Err(e)) => {
                let e = ChannelError::WebSocket(format!("cannot connect to {url}: {e}"));
                guard.fail(FailureReason::error(&e));
                return Err(e);
            }
            Err(_) => {
                guard.fail(FailureReason::error(timed_out()));
                return Err(timed_out());
            }
        };
        let (mut sink, mut stream) = ws::from_tungstenite(socket);
        let started = client_hello::start_with(
            self.config.suite,
            self.config.cipher,
            identity,
            server.into(),
            host,
            auth_payload,
        );
        let handshake = async {
            let (state, hello) = started?;
            handshake(guard.session(), &mut sink, &mut stream, state, hello).await
        };
        let outcome = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(outcome) => outcome,
            Err(_) => Err(timed_out()),
        };
        match outcome {
            Ok(established) => transport::start(
                &self.registry,
                guard,
                sink,
                stream,
                established,
                &self.config,
            ),
            Err(e) => {
                ws::close_after(&mut sink, &e, self.config.close_timeout).await;
                guard.fail(FailureReason::error(format!("handshake: {e}")));
                Err(e)
            }
        }
    }
}

/// Connects with default limits; the channel is a session of a registry of its own. Services that open
/// many channels should share one [`Connector`].
pub async fn connect(
    url: &str,
    server: impl Into<ServerTrust>,
    identity: &Identity,
) -> Result<Channel, ChannelError> {
    let registry = Registry::new(RegistryConfig::new("channel-client"));
    Connector::new(registry, ChannelConfig::default())
        .connect(url, server, identity)
        .await
}

/// client_hello → server_hello (pin check) → client_auth → session_established.
async fn handshake(
    session: &tessera_session::Session,
    sink: &mut WsSink,
    stream: &mut WsStream,
    state: ExpectServerHello,
    hello: Vec<u8>,
) -> Result<Established, ChannelError> {
    send(sink, hello).await?;
    let (state, auth) = state.handle(&ws::next_frame(stream).await?)?;
    session.touch();
    send(sink, auth).await?;
    let established = state.handle(&ws::next_frame(stream).await?)?;
    session.touch();
    Ok(established)
}

async fn send(sink: &mut WsSink, frame: Vec<u8>) -> Result<(), ChannelError> {
    sink.send(WsMsg::Binary(frame.into()))
        .await
        .map_err(ChannelError::from)
}

/// `host:port` of a ws:// or wss:// URL, the key under which known-hosts records the server.
fn host_port(url: &str) -> Result<String, ChannelError> {
    let bad = || ChannelError::WebSocket(format!("not a ws:// or wss:// URL: {url}"));
    let uri: Uri = url.parse().map_err(|_| bad())?;
    let default_port = match uri.scheme_str() {
        Some("ws") => 80,
        Some("wss") => 443,
        _ => return Err(bad()),
    };
    let host = uri.host().ok_or_else(bad)?;
    Ok(format!("{host}:{}", uri.port_u16().unwrap_or(default_port)))
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_port_defaults_by_scheme() {
        assert_eq!(host_port("ws://a.example/x").expect("ok"), "a.example:80");
        assert_eq!(host_port("wss://a.example").expect("ok"), "a.example:443");
        assert_eq!(host_port("ws://127.0.0.1:9/").expect("ok"), "127.0.0.1:9");
        assert!(host_port("http://a").is_err());
    }
}
