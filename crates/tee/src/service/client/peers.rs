//! The client's two channels (to TEE_K and TEE_T) and the messages of one session on them: opened for a
//! first session, or kept from a finished one and asked for the next (`new_session`).

use super::ClientError;
use crate::proto::{Body, NewSession};
use crate::service::TeeEndpoint;
use crate::wire::{self, WireSessionId};
use tessera_channel::{ChannelReader, ChannelWriter, Connector, Identity};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    K,
    T,
}

impl Side {
    pub(super) fn name(self) -> &'static str {
        match self {
            Side::K => "TEE_K",
            Side::T => "TEE_T",
        }
    }
}

/// The two channels; messages of this session only.
pub(super) struct Peers {
    pub(super) sid: WireSessionId,
    pub(super) k_rx: ChannelReader,
    pub(super) k_tx: ChannelWriter,
    pub(super) t_rx: ChannelReader,
    pub(super) t_tx: ChannelWriter,
    pub(super) k_done: bool,
    pub(super) t_done: bool,
}

impl Peers {
    async fn recv(
        rx: &mut ChannelReader,
        side: Side,
        sid: &WireSessionId,
    ) -> Result<Body, ClientError> {
        match rx.recv().await {
            Ok(Some(bytes)) => match wire::decode_received(bytes, Some(sid)) {
                Ok((_, Body::Error(e))) => Err(ClientError::Rejected(side.name(), e.reason)),
                Ok((_, body)) => Ok(body),
                Err(e) => Err(ClientError::Protocol(format!("{}: {e}", side.name()))),
            },
            Ok(None) => Err(ClientError::Channel(side.name(), "closed".into())),
            Err(e) => Err(ClientError::Channel(side.name(), e.to_string())),
        }
    }

    /// The next message from either TEE (an `Error` from either ends the proof with its reason).
    pub(super) async fn next(&mut self) -> Result<(Side, Body), ClientError> {
        let sid = self.sid;
        let (k_done, t_done) = (self.k_done, self.t_done);
        let k = async {
            if k_done {
                std::future::pending().await
            } else {
                Self::recv(&mut self.k_rx, Side::K, &sid).await
            }
        };
        let t = async {
            if t_done {
                std::future::pending().await
            } else {
                Self::recv(&mut self.t_rx, Side::T, &sid).await
            }
        };
        tokio::select! {
            body = k => Ok((Side::K, body?)),
            body = t => Ok((Side::T, body?)),
        }
    }

    pub(super) async fn expect(&mut self, side: Side, name: &str) -> Result<Body, ClientError> {
        match self.next().await? {
            (s, body) if s == side => Ok(body),
            (s, body) => Err(ClientError::Protocol(format!(
                "{} sent {} (expected {name} from {})",
                s.name(),
                wire::body_name(&body),
                side.name()
            ))),
        }
    }

    pub(super) async fn send(&self, side: Side, body: Body) -> Result<(), ClientError> {
        let tx = match side {
            Side::K => &self.k_tx,
            Side::T => &self.t_tx,
        };
        tx.send(wire::encode(&self.sid, body))
            .await
            .map_err(|e| ClientError::Channel(side.name(), e.to_string()))
    }
}

/// Step 1 on new channels: both handshakes at once (neither depends on the other: TEE_T learns the session
/// from TEE_K, and the client's first message to it carries the id TEE_K assigns), then `session_ready`.
pub(super) async fn open(
    connector: &Connector,
    identity: &Identity,
    tee_k: &TeeEndpoint,
    tee_t: &TeeEndpoint,
) -> Result<Peers, ClientError> {
    let (k, t) = tokio::join!(
        connector.connect(&tee_k.url, tee_k.key, identity),
        connector.connect(&tee_t.url, tee_t.key, identity),
    );
    let k = k.map_err(|e| ClientError::Channel("TEE_K", e.to_string()))?;
    // A TEE_T the client cannot reach is usually one TEE_K cannot reach either: TEE_K's reason, which comes
    // first below, says more, so the channel error waits until then.
    let t = t.map_err(|e| ClientError::Channel("TEE_T", e.to_string()));
    let (mut k_rx, k_tx) = k.split();
    let sid = session_ready(&mut k_rx).await?;
    let (t_rx, t_tx) = t?.split();
    Ok(Peers {
        sid,
        k_rx,
        k_tx,
        t_rx,
        t_tx,
        k_done: false,
        t_done: false,
    })
}

/// Step 1 on channels a finished session left open: `new_session`, then `session_ready` with the new id.
pub(super) async fn next_session(mut peers: Peers) -> Result<Peers, ClientError> {
    peers.send(Side::K, Body::NewSession(NewSession {})).await?;
    peers.sid = session_ready(&mut peers.k_rx).await?;
    peers.k_done = false;
    peers.t_done = false;
    Ok(peers)
}

/// TEE_K's first message of a session: `session_ready`, whose envelope carries the session id.
async fn session_ready(k_rx: &mut ChannelReader) -> Result<WireSessionId, ClientError> {
    let first = k_rx
        .recv()
        .await
        .map_err(|e| ClientError::Channel("TEE_K", e.to_string()))?
        .ok_or(ClientError::Channel("TEE_K", "closed".into()))?;
    match wire::decode_received(first, None) {
        Ok((sid, Body::SessionReady(_))) => Ok(sid),
        Ok((_, Body::Error(e))) => Err(ClientError::Rejected("TEE_K", e.reason)),
        Ok((_, body)) => Err(super::unexpected(Side::K, &body, "session_ready")),
        Err(e) => Err(ClientError::Protocol(format!("TEE_K: {e}"))),
    }
}
