//! TEE_K's one persistent, mutually pinned channel to TEE_T, carrying every session (multiplexed by
//! session id). TEE_K pins TEE_T's channel key; TEE_T admits only TEE_K's key on its `/teek` endpoint, so
//! `finished` can come from nowhere else (reference gap 3). The link is opened on first use and again after
//! it is lost; losing it ends the sessions it carried (their inboxes close).

use super::common::{Routes, channel_config};
use crate::proto::Body;
use crate::wire;
use std::sync::Arc;
use tessera_channel::{ChannelError, ChannelWriter, Connector, Identity, PublicKey};
use tessera_session::{CancellationToken, Registry};

/// The open link: its writer (one writer task underneath) and the routes of its sessions.
pub(crate) struct Link {
    pub(crate) writer: ChannelWriter,
    pub(crate) routes: Routes<Body>,
    alive: CancellationToken,
}

impl Link {
    pub(crate) fn is_alive(&self) -> bool {
        !self.alive.is_cancelled()
    }

    /// Cancelled once the link is lost: the parent of its sessions' routes.
    pub(crate) fn alive(&self) -> &CancellationToken {
        &self.alive
    }
}

/// Opens and keeps the link to TEE_T.
pub(crate) struct PeerLink {
    url: String,
    key: PublicKey,
    identity: Identity,
    connector: Connector,
    current: tokio::sync::Mutex<Option<Arc<Link>>>,
}

impl PeerLink {
    pub(crate) fn new(url: String, key: PublicKey, identity: Identity, registry: Registry) -> Self {
        PeerLink {
            url,
            key,
            identity,
            connector: Connector::new(registry, channel_config()),
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The registry of the link's channel sessions.
    pub(crate) fn registry(&self) -> &Registry {
        self.connector.registry()
    }

    /// The live link, opening it if there is none.
    pub(crate) async fn get(&self) -> Result<Arc<Link>, ChannelError> {
        let mut current = self.current.lock().await;
        if let Some(link) = current.as_ref().filter(|l| l.is_alive()) {
            return Ok(link.clone());
        }
        let channel = self
            .connector
            .connect(&self.url, self.key, &self.identity)
            .await?;
        let session = channel.session().clone();
        let (mut reader, writer) = channel.split();
        let link = Arc::new(Link {
            writer,
            routes: Routes::default(),
            alive: CancellationToken::new(),
        });
        let routes = link.routes.clone();
        let alive = link.alive.clone();
        let dead = Dead(routes.clone(), alive);
        // The dispatcher belongs to the link's channel session: it stops when that session ends, and on
        // every exit the link counts as dead and its sessions' inboxes close.
        session
            .spawn(async move {
                let _dead = dead;
                loop {
                    match reader.recv().await {
                        Ok(Some(bytes)) => match wire::decode_received(bytes, None) {
                            Ok((sid, body)) => {
                                if !routes.deliver(&sid, body) {
                                    tracing::debug!("TEE_T message for a session that is gone");
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "bad message from TEE_T"),
                        },
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "link to TEE_T lost");
                            break;
                        }
                    }
                }
            })
            .map_err(|e| ChannelError::WebSocket(format!("link session: {e}")))?;
        tracing::info!(url = %self.url, "link to TEE_T open");
        *current = Some(link.clone());
        Ok(link)
    }
}

struct Dead(Routes<Body>, CancellationToken);

impl Drop for Dead {
    fn drop(&mut self) {
        self.0.clear();
        self.1.cancel();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.alive.cancel();
    }
}
