//! Request/response correlation.
//!
//! A session's pending requests live in the session's own table, under the same lock as its lifecycle state,
//! so that "is the session still open?" and "record this request" are one atomic step, and ending a session
//! drains its table in the same step that makes it terminal: nothing can be added after the drain. Together
//! with the registry this gives the (session id, request id) keying the seed asked for, with per-session
//! cleanup for free.
//!
//! Every entry is resolved exactly once. Whoever removes the entry from the table — the response
//! ([`crate::Session::take_pending`]), the waiter's own deadline, the sweeper, or the session's end — holds
//! the only sender for its waiter, so a response and a timeout can race but only one of them is ever seen.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{PendingError, SessionError};
use crate::session::Session;

/// A request id as it appears on the wire: JSON-RPC allows numbers and strings.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    /// A numeric id.
    Num(i64),
    /// A string id.
    Str(Arc<str>),
}

/// A cheap hasher for a session's pending table. Request ids are chosen by peers, so a weak hash could be
/// steered into collisions; the per-session limit (1000 by default) bounds what that can cost, which is why
/// the table does not pay for SipHash.
#[derive(Default)]
pub(crate) struct RequestIdHasher(u64);

impl std::hash::Hasher for RequestIdHasher {
    fn finish(&self) -> u64 {
        // Final avalanche (from splitmix64) so both the low bits (bucket) and high bits (tag) vary.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x0100_0000_01b3);
    }
    fn write_i64(&mut self, n: i64) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Num(n) => write!(f, "{n}"),
            RequestId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<i64> for RequestId {
    fn from(n: i64) -> Self {
        RequestId::Num(n)
    }
}

impl From<i32> for RequestId {
    fn from(n: i32) -> Self {
        RequestId::Num(i64::from(n))
    }
}

impl From<u32> for RequestId {
    fn from(n: u32) -> Self {
        RequestId::Num(i64::from(n))
    }
}

impl From<&str> for RequestId {
    fn from(s: &str) -> Self {
        RequestId::Str(s.into())
    }
}

impl From<String> for RequestId {
    fn from(s: String) -> Self {
        RequestId::Str(s.into())
    }
}

/// What the table remembers about a request: its kind (e.g. the JSON-RPC method) and when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The request's kind or method, so a response is recognized by its request, not guessed from its shape.
    pub kind: Cow<'static, str>,
    /// When the request was recorded.
    pub started: Instant,
    /// When it times out.
    pub deadline: Instant,
}

impl RequestInfo {
    /// Time since the request was recorded.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

pub(crate) type Outcome<R> = Result<R, PendingError>;

/// One row of a session's pending table.
pub(crate) struct Entry<R> {
    pub(crate) info: RequestInfo,
    /// Distinguishes this entry from a later one that reuses the same request id.
    pub(crate) generation: u64,
    pub(crate) waiter: oneshot::Sender<Outcome<R>>,
}

/// A response's claim on a pending request, returned by [`crate::Session::take_pending`]. The entry is
/// already out of the table; [`Taken::resolve`] hands the response to the waiter. Dropping it unresolved
/// tells the waiter [`PendingError::Abandoned`].
#[must_use = "resolve the request, or its waiter learns it was abandoned"]
pub struct Taken<R> {
    info: RequestInfo,
    waiter: oneshot::Sender<Outcome<R>>,
}

impl<R> Taken<R> {
    pub(crate) fn new(info: RequestInfo, waiter: oneshot::Sender<Outcome<R>>) -> Self {
        Taken { info, waiter }
    }

    /// What was recorded about the request.
    pub fn info(&self) -> &RequestInfo {
        &self.info
    }

    /// Delivers the response to the waiter (if it still waits) and returns the request's info.
    pub fn resolve(self, response: R) -> RequestInfo {
        let _ = self.waiter.send(Ok(response));
        self.info
    }
}

impl<R> fmt::Debug for Taken<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Taken").field("info", &self.info).finish()
    }
}

/// The waiting side of a pending request, returned by [`crate::Session::insert_pending`].
///
/// [`Pending::wait`] resolves exactly once: with the response, or with [`PendingError::Timeout`] at the
/// deadline, or with [`PendingError::SessionEnded`]. Dropping a `Pending` does not remove the request: its
/// response can still be taken, and the sweeper expires it at its deadline.
#[must_use = "a pending request is resolved through its waiter"]
pub struct Pending<R> {
    pub(crate) session: Session<R>,
    pub(crate) id: RequestId,
    pub(crate) generation: u64,
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
    pub(crate) rx: oneshot::Receiver<Outcome<R>>,
}

/// Names one pending request: its id and which insertion of that id it was, so that whoever withdraws it
/// later ([`crate::Session::withdraw_pending`]) never takes a newer request that reused the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTicket {
    id: RequestId,
    generation: u64,
}

impl PendingTicket {
    /// The request id.
    pub fn id(&self) -> &RequestId {
        &self.id
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

impl<R: Send + 'static> Pending<R> {
    /// The request id this waiter belongs to.
    pub fn id(&self) -> &RequestId {
        &self.id
    }

    /// This request's ticket, to withdraw exactly it later.
    pub fn ticket(&self) -> PendingTicket {
        PendingTicket {
            id: self.id.clone(),
            generation: self.generation,
        }
    }

    /// When this request times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Waits for the response, the deadline or the session's end — whichever removes the entry first.
    pub async fn wait(mut self) -> Result<R, PendingError> {
        match tokio::time::timeout_at(self.deadline, &mut self.rx).await {
            Ok(outcome) => outcome.unwrap_or(Err(PendingError::Abandoned)),
            Err(_elapsed) => {
                if self
                    .session
                    .expire_pending(&self.id, self.generation, self.timeout)
                {
                    Err(PendingError::Timeout(self.timeout))
                } else {
                    // Someone else removed the entry first and holds its sender: take their outcome.
                    self.rx.await.unwrap_or(Err(PendingError::Abandoned))
                }
            }
        }
    }
}

impl<R> fmt::Debug for Pending<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("session", &self.session.id())
            .field("id", &self.id)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// Limits and deadline for pending requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLimits {
    /// Most requests pending in one session (default 1000).
    pub per_session: usize,
    /// Most requests pending across all sessions of a registry (default 10,000).
    pub global: usize,
    /// How long a request may wait for its response (default 30 s).
    pub deadline: Duration,
}

impl Default for PendingLimits {
    fn default() -> Self {
        PendingLimits {
            per_session: 1000,
            global: 10_000,
            deadline: Duration::from_secs(30),
        }
    }
}

pub(crate) fn duplicate(id: &RequestId) -> SessionError {
    SessionError::DuplicateRequest(id.to_string())
}
