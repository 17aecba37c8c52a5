//! Pieces both services and the client share: limits, the per-session failure, the routing table that
//! multiplexes sessions over one channel, and sending one envelope.

use crate::proto::Body;
use crate::wire::{self, WireSessionId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tessera_channel::{Channel, ChannelConfig, ChannelWriter, CipherImpl, Listener, Suite};
use tessera_session::{CancellationToken, Registry, RegistryConfig};
use tokio::sync::mpsc;

/// Limits of a TEE service. Every size and queue is bounded; every session has one deadline.
#[derive(Debug, Clone)]
pub struct Limits {
    /// One session, from `session_ready` to the signed output, must end within this (default 60 s);
    /// past it the session ends with `Error{"session deadline exceeded"}` to the client (reference gap 13).
    pub session_deadline: Duration,
    /// A session with no message for this long ends with `Error{"idle for too long"}` (default 30 s; the
    /// registry's sweeper is the backstop).
    pub idle_timeout: Duration,
    /// Most sessions at once (default 1,000).
    pub max_sessions: usize,
    /// Largest response, in ciphertext bytes over all records plus `RECORD_CHARGE` per record (default
    /// 64 MiB): what each TEE holds for a session stays bounded however small the records are.
    pub max_response: usize,
    /// Most server records relayed during the handshake (default 64).
    pub max_handshake_records: usize,
}

/// What each response record counts against [`Limits::max_response`] beyond its ciphertext: its header,
/// tag and bookkeeping, which each TEE holds until the session ends (TLS 1.2 allows empty records).
pub const RECORD_CHARGE: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            session_deadline: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            max_sessions: 1_000,
            max_response: 64 * 1024 * 1024,
            max_handshake_records: 64,
        }
    }
}

impl Limits {
    /// The registry of protocol sessions: behind the session's own idle and deadline timers, the sweeper
    /// ends any session idle or older than those plus a grace second.
    pub(crate) fn registry(&self, name: &'static str) -> Registry {
        let mut config = RegistryConfig::new(name);
        config.max_sessions = self.max_sessions;
        // Backstops: the session's own timers fire first and tell the client why.
        config.idle_timeout = self.idle_timeout + Duration::from_secs(1);
        config.max_age = Some(self.session_deadline + Duration::from_secs(1));
        Registry::new(config)
    }

    /// The registry of channel connections (one session per connection).
    pub(crate) fn channel_registry(&self, name: &'static str) -> Registry {
        let mut config = RegistryConfig::new(name);
        config.max_sessions = self.max_sessions.saturating_mul(2).max(2);
        config.idle_timeout = self.idle_timeout;
        config.max_age = None;
        Registry::new(config)
    }
}

/// Most hidden response ranges a proof may have (TEE_K refuses more; the client says so before asking).
pub(crate) use crate::wire::limits::MAX_HIDDEN_RANGES;

/// Channel limits for the TEE protocol: messages up to [`wire::MAX_MESSAGE_LEN`].
/// A service's accept loop: hands every channel `listener` accepts to `serve`, until `stop` is cancelled
/// or the channel server is gone.
pub(crate) fn accept_until(
    stop: CancellationToken,
    mut listener: Listener,
    mut serve: impl FnMut(Channel) + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => None,
                channel = listener.accept() => channel,
            };
            match accepted {
                Some(channel) => serve(channel),
                None => break,
            }
        }
    });
}

pub(crate) fn channel_config() -> ChannelConfig {
    ChannelConfig {
        max_message_size: wire::MAX_MESSAGE_LEN,
        // A proof moves its response through two channels: AES-GCM (version 2) on ring's assembly runs
        // the bulk several times faster than ChaCha20-Poly1305 on CPUs with AES instructions, and is worth
        // its larger keys. (Servers speak both versions; this picks what the clients ask for.)
        suite: Suite::AesGcm,
        cipher: CipherImpl::Fast,
        ..ChannelConfig::default()
    }
}

/// Why one session ended: the reason goes to the client (and the peer TEE) in `Error{reason}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fail(pub String);

impl Fail {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Fail(reason.into())
    }

    /// A message that is not the one this step expects.
    pub(crate) fn unexpected(got: &Body, expected: &str) -> Self {
        match got {
            Body::Error(e) => Fail(format!("peer ended the session: {}", e.reason)),
            other => Fail(format!(
                "unexpected {} (expected {expected})",
                wire::body_name(other)
            )),
        }
    }
}

impl<E: std::fmt::Display> From<E> for Fail
where
    E: std::error::Error,
{
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

/// Sends one message of `session` on `writer`; the message's secret fields are zeroized once encoded.
pub(crate) async fn send(
    writer: &ChannelWriter,
    session: &WireSessionId,
    body: Body,
) -> Result<(), Fail> {
    let mut envelope = crate::proto::Envelope {
        session_id: session.to_vec(),
        body: Some(body),
    };
    let bytes = prost::Message::encode_to_vec(&envelope);
    if let Some(body) = envelope.body.as_mut() {
        scrub(body);
    }
    writer
        .send(bytes)
        .await
        .map_err(|e| Fail(format!("channel: {e}")))
}

/// Zeroizes the secret fields of a message (tag secrets, keystreams, redaction streams and keys).
pub(crate) fn scrub(body: &mut Body) {
    use zeroize::Zeroize;
    match body {
        Body::BatchedTagSecrets(b) => b.secrets.iter_mut().for_each(|s| {
            s.tag_secrets.zeroize();
            s.tail_keystream.zeroize();
        }),
        Body::BatchedDecryptionStreams(b) => b
            .streams
            .iter_mut()
            .for_each(|s| tessera_session::wipe_vec(&mut s.keystream)),
        Body::EncryptedRequest(r) => r.tag_secrets.zeroize(),
        Body::RedactionStreams(r) => {
            r.streams.iter_mut().for_each(Zeroize::zeroize);
            r.commitment_keys.iter_mut().for_each(Zeroize::zeroize);
        }
        _ => {}
    }
}

/// Largest verifier nonce, in bytes.
pub(crate) const MAX_NONCE: usize = 64;

/// Messages queued for one session before its router counts it as stuck and drops its route.
pub(crate) const SESSION_QUEUE: usize = 32;

/// Session id → the session's inbox: how one channel carries many sessions. Entries are removed by the
/// [`RouteGuard`] the session holds, on every exit path; a route that is removed or cleared for any other
/// reason (a stuck session, a lost link) is cancelled, which ends its session at once even while other
/// holders keep clones of its inbox's sender.
pub(crate) struct Routes<T>(Arc<Mutex<HashMap<WireSessionId, Route<T>>>>);

/// One session's entry.
struct Route<T> {
    tx: mpsc::Sender<T>,
    /// Cancelled when the route is removed, or when the parent given to [`Routes::insert`] is.
    cancel: CancellationToken,
    /// A client channel claimed the session ([`Routes::attach`]).
    attached: bool,
}

/// Why [`Routes::attach`] refused a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttachRefused {
    /// No such session.
    Unknown,
    /// Another channel already claimed the session.
    Taken,
}

impl AttachRefused {
    /// The reason sent to the refused channel.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            AttachRefused::Unknown => "unknown session",
            AttachRefused::Taken => "session already has a client",
        }
    }
}

impl<T> Clone for Routes<T> {
    fn clone(&self) -> Self {
        Routes(self.0.clone())
    }
}

impl<T> Default for Routes<T> {
    fn default() -> Self {
        Routes(Arc::new(Mutex::new(HashMap::new())))
    }
}

impl<T> Routes<T> {
    fn lock(&self) -> MutexGuard<'_, HashMap<WireSessionId, Route<T>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `session`; `None` if it already is (check and insert in one step). The route is cancelled
    /// with `parent` (the link that announced the session) as well as when it is removed.
    pub(crate) fn insert(
        &self,
        session: WireSessionId,
        parent: &CancellationToken,
    ) -> Option<(RouteGuard<T>, mpsc::Receiver<T>)> {
        let mut map = self.lock();
        if map.contains_key(&session) {
            return None;
        }
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let cancel = parent.child_token();
        map.insert(
            session,
            Route {
                tx,
                cancel: cancel.clone(),
                attached: false,
            },
        );
        Some((
            RouteGuard {
                routes: self.clone(),
                session,
                cancel,
            },
            rx,
        ))
    }

    /// Claims `session` for one client channel: decided once, under the lock, so of two channels naming
    /// the same session exactly one gets its inbox and the other nothing at all.
    pub(crate) fn attach(&self, session: &WireSessionId) -> Result<mpsc::Sender<T>, AttachRefused> {
        let mut map = self.lock();
        let route = map.get_mut(session).ok_or(AttachRefused::Unknown)?;
        if route.attached {
            return Err(AttachRefused::Taken);
        }
        route.attached = true;
        Ok(route.tx.clone())
    }

    /// Delivers without waiting; a full inbox means the session is stuck: its route is dropped and
    /// cancelled, so the session ends. Returns false if nothing was delivered.
    pub(crate) fn deliver(&self, session: &WireSessionId, message: T) -> bool {
        let Some(tx) = self.lock().get(session).map(|r| r.tx.clone()) else {
            return false;
        };
        match tx.try_send(message) {
            Ok(()) => true,
            Err(_) => {
                self.remove(session);
                false
            }
        }
    }

    /// Drops and cancels the route of `session`.
    pub(crate) fn remove(&self, session: &WireSessionId) {
        if let Some(route) = self.lock().remove(session) {
            route.cancel.cancel();
        }
    }

    /// Drops and cancels every route (the channel carrying them is gone).
    pub(crate) fn clear(&self) {
        let routes: Vec<Route<T>> = self.lock().drain().map(|(_, r)| r).collect();
        routes.iter().for_each(|r| r.cancel.cancel());
    }
}

/// Removes a session's route when dropped.
pub(crate) struct RouteGuard<T> {
    routes: Routes<T>,
    session: WireSessionId,
    cancel: CancellationToken,
}

impl<T> RouteGuard<T> {
    /// Completes once the route was dropped (the session is stuck) or its parent link was lost: the
    /// session must end.
    pub(crate) async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}

impl<T> Drop for RouteGuard<T> {
    fn drop(&mut self) {
        self.routes.remove(&self.session);
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_attached_once_and_a_dropped_route_is_cancelled() {
        let routes: Routes<u32> = Routes::default();
        let link = CancellationToken::new();
        let (guard, _inbox) = routes.insert([1; 16], &link).expect("registered");
        assert!(routes.insert([1; 16], &link).is_none());
        assert!(routes.attach(&[1; 16]).is_ok());
        assert_eq!(routes.attach(&[1; 16]).err(), Some(AttachRefused::Taken));
        assert_eq!(routes.attach(&[2; 16]).err(), Some(AttachRefused::Unknown));
        // A full inbox: the route is dropped and cancelled, although a sender clone is still held.
        for i in 0..SESSION_QUEUE as u32 {
            assert!(routes.deliver(&[1; 16], i));
        }
        assert!(!guard.cancel.is_cancelled());
        assert!(!routes.deliver(&[1; 16], 99));
        assert!(guard.cancel.is_cancelled());
        // A lost link cancels the routes of the sessions it announced.
        let (other, _inbox) = routes.insert([3; 16], &link).expect("registered");
        link.cancel();
        assert!(other.cancel.is_cancelled());
    }
}
