//! Who may connect: the server's admission policy, and the client's pin on the server.
//!
//! After client_auth the server knows the client's static key (its identity) and the application auth
//! payload; a [`ClientPolicy`] decides whether to admit it and what welcome payload goes into
//! session_established. A client pins the server with a [`ServerTrust`]: an explicit key, or a known-hosts
//! file. The pin is checked after server_hello, *before* the client reveals its own identity in client_auth.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::ChannelError;
use crate::identity::PublicKey;
use crate::known_hosts::KnownHosts;

/// What the policy sees of a client that completed client_auth.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionRequest<'a> {
    /// The client's identity (its Noise static key, proven by the handshake).
    pub peer: PublicKey,
    /// The application auth payload from client_auth.
    pub auth_payload: &'a [u8],
    /// The handshake hash: the channel-binding value of this connection.
    pub channel_binding: &'a [u8],
}

/// A policy's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admit the client; `welcome` is the application payload of session_established.
    Accept {
        /// Application payload for session_established.
        welcome: Vec<u8>,
    },
    /// Refuse the client; `reason` is sent in the WebSocket close frame (close code 4004).
    Reject {
        /// Why (sent to the client; keep it short and free of secrets).
        reason: String,
    },
}

impl Admission {
    /// Accept with an empty welcome payload.
    pub fn accept() -> Self {
        Admission::Accept {
            welcome: Vec::new(),
        }
    }

    /// Reject with a reason.
    pub fn reject(reason: impl Into<String>) -> Self {
        Admission::Reject {
            reason: reason.into(),
        }
    }
}

/// The server's admission hook. It runs inside the handshake, under the handshake timeout; keep it fast.
/// Closures `Fn(&AdmissionRequest) -> Admission` implement it.
pub trait ClientPolicy: Send + Sync + 'static {
    /// Decides whether to admit the client.
    fn admit(&self, request: &AdmissionRequest<'_>) -> Admission;
}

impl<F> ClientPolicy for F
where
    F: Fn(&AdmissionRequest<'_>) -> Admission + Send + Sync + 'static,
{
    fn admit(&self, request: &AdmissionRequest<'_>) -> Admission {
        self(request)
    }
}

/// Admits exactly the listed keys.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    keys: HashSet<PublicKey>,
}

impl AllowList {
    /// An allow-list of these keys.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        AllowList {
            keys: keys.into_iter().collect(),
        }
    }
}

impl ClientPolicy for AllowList {
    fn admit(&self, request: &AdmissionRequest<'_>) -> Admission {
        if self.keys.contains(&request.peer) {
            Admission::accept()
        } else {
            Admission::reject("client key not on the allow-list")
        }
    }
}

/// Admits any key: the application decides later from [`crate::Channel::peer`] (every channel still
/// carries a proven identity).
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyKey;

impl ClientPolicy for AnyKey {
    fn admit(&self, _request: &AdmissionRequest<'_>) -> Admission {
        Admission::accept()
    }
}

/// How a client decides that the server is the one it meant.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Exactly this key.
    Key(PublicKey),
    /// Whatever a known-hosts file says for `host:port`: trust on first use, hard failure on change.
    KnownHosts(Arc<KnownHosts>),
}

impl From<PublicKey> for ServerTrust {
    fn from(key: PublicKey) -> Self {
        ServerTrust::Key(key)
    }
}

impl From<Arc<KnownHosts>> for ServerTrust {
    fn from(hosts: Arc<KnownHosts>) -> Self {
        ServerTrust::KnownHosts(hosts)
    }
}

impl ServerTrust {
    /// Checks the key the server proved in server_hello. `host` is `host:port` of the URL.
    pub fn verify(&self, host: &str, presented: PublicKey) -> Result<(), ChannelError> {
        match self {
            ServerTrust::Key(expected) if *expected == presented => Ok(()),
            ServerTrust::Key(expected) => Err(ChannelError::ServerKeyMismatch {
                expected: *expected,
                presented,
            }),
            ServerTrust::KnownHosts(hosts) => hosts
                .check_or_trust(host, presented)
                .map(|_| ())
                .map_err(ChannelError::from),
        }
    }
}
