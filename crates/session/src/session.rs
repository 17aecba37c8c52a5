//! A session: one lifecycle state, its pending requests, its cancellation token and task tracker.
//!
//! [`Session`] is a cheap handle (an `Arc`) that tasks, connections and the registry share. The registry hands
//! out a [`SessionGuard`] when the session starts; the guard ends the session on every exit path when it
//! drops, so no code path can leave a session behind.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::mem;
use std::ops::Deref;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

use crate::error::{LimitScope, PendingError, SessionEnd, SessionError};
use crate::id::SessionId;
use crate::pending::{
    Entry, Pending, PendingTicket, RequestId, RequestIdHasher, RequestInfo, Taken, duplicate,
};
use crate::registry::Shared;
use crate::state::{FailureReason, SessionState};

/// Locks a mutex, recovering from poisoning: nothing inside our critical sections can leave the data
/// half-updated, so the data is still consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type PendingMap<R> = HashMap<RequestId, Entry<R>, BuildHasherDefault<RequestIdHasher>>;

/// State and pending table under one lock: "still open?" and "record this request" are one step.
struct Core<R> {
    state: SessionState,
    pending: PendingMap<R>,
    next_generation: u64,
}

pub(crate) struct Inner<R> {
    id: SessionId,
    kind: &'static str,
    created: Instant,
    /// Milliseconds after `created` of the last activity.
    last_activity_ms: AtomicU64,
    core: Mutex<Core<R>>,
    token: CancellationToken,
    tracker: TaskTracker,
    /// Set (inside the core lock) when the session reaches a terminal state: a lock-free `is_ended`.
    ended: AtomicBool,
    /// Woken on non-terminal transitions (ShuttingDown); the end is signalled by the token.
    state_changed: Notify,
    connections: AtomicUsize,
    shared: Arc<Shared<R>>,
}

/// A handle to a live (or just ended) session. Clone it freely; all clones see the same session.
pub struct Session<R = ()> {
    inner: Arc<Inner<R>>,
}

impl<R> Clone for Session<R> {
    fn clone(&self) -> Self {
        Session {
            inner: self.inner.clone(),
        }
    }
}

impl<R> fmt::Debug for Session<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("kind", &self.inner.kind)
            .field("state", &self.state())
            .finish()
    }
}

impl<R> Session<R> {
    pub(crate) fn new(id: SessionId, kind: &'static str, shared: Arc<Shared<R>>) -> Self {
        Session {
            inner: Arc::new(Inner {
                id,
                kind,
                created: Instant::now(),
                last_activity_ms: AtomicU64::new(0),
                core: Mutex::new(Core {
                    state: SessionState::Initializing,
                    pending: HashMap::default(),
                    next_generation: 0,
                }),
                token: CancellationToken::new(),
                tracker: TaskTracker::new(),
                ended: AtomicBool::new(false),
                state_changed: Notify::new(),
                connections: AtomicUsize::new(0),
                shared,
            }),
        }
    }

    /// The session's unguessable id.
    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    /// What kind of session this is (e.g. "mcp-http", "relay"), as given at creation.
    pub fn kind(&self) -> &'static str {
        self.inner.kind
    }

    /// The current lifecycle state.
    pub fn state(&self) -> SessionState {
        lock(&self.inner.core).state.clone()
    }

    /// True once the session is Closed or Failed.
    pub fn is_ended(&self) -> bool {
        self.inner.ended.load(Ordering::Acquire)
    }

    /// How long the session has existed.
    pub fn age(&self) -> Duration {
        self.inner.created.elapsed()
    }

    /// How long since the last activity ([`Session::touch`], a new request, a response).
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.inner.last_activity_ms.load(Ordering::Relaxed));
        self.age().saturating_sub(last)
    }

    /// Records activity, postponing the idle timeout.
    pub fn touch(&self) {
        self.touch_at(Instant::now());
    }

    fn touch_at(&self, now: Instant) {
        let since = now.saturating_duration_since(self.inner.created);
        let ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
        self.inner.last_activity_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The session's cancellation token: cancelled exactly when the session ends. Child tasks that do not
    /// go through [`Session::spawn`] select on it.
    pub fn token(&self) -> CancellationToken {
        self.inner.token.clone()
    }

    /// Completes when the session ends.
    pub fn ended(&self) -> WaitForCancellationFuture<'_> {
        self.inner.token.cancelled()
    }

    /// Completes when the session stops accepting new work: asked to shut down, or ended.
    pub async fn shutdown_requested(&self) {
        loop {
            let notified = self.inner.state_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !lock(&self.inner.core).state.accepts_work() {
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = self.inner.token.cancelled() => return,
            }
        }
    }

    /// The session's task tracker: every task of the session is on it. `len()` counts them.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// The one transition function. Moves the session to `to` if the lifecycle table allows it; a terminal
    /// target (Closed, Failed) also ends the session in the same step: its pending requests are drained and
    /// their waiters told why, its token is cancelled (stopping every task) and it leaves the registry.
    pub fn transition(&self, to: SessionState) -> Result<(), SessionError> {
        let mut core = lock(&self.inner.core);
        let next = core.state.transition(to)?;
        let prev = mem::replace(&mut core.state, next.clone());
        if !next.is_terminal() {
            drop(core);
            self.inner.shared.metrics.moved(Some(&prev), &next);
            self.inner.state_changed.notify_waiters();
            return Ok(());
        }
        let drained = mem::take(&mut core.pending);
        self.inner.ended.store(true, Ordering::Release);
        drop(core);
        self.finish_end(prev, next, drained);
        Ok(())
    }

    /// Initializing → Active.
    pub fn activate(&self) -> Result<(), SessionError> {
        self.transition(SessionState::Active)
    }

    /// Ends the session normally. Returns false if it had already ended.
    pub fn close(&self) -> bool {
        self.transition(SessionState::Closed).is_ok()
    }

    /// Ends the session with a failure. Returns false if it had already ended.
    pub fn fail(&self, reason: FailureReason) -> bool {
        self.transition(SessionState::Failed(reason)).is_ok()
    }

    fn finish_end(&self, prev: SessionState, end: SessionState, drained: PendingMap<R>) {
        let inner = &*self.inner;
        inner.shared.metrics.moved(Some(&prev), &end);
        inner.token.cancel();
        inner.tracker.close();
        let why = match &end {
            SessionState::Failed(reason) => SessionEnd::Failed(reason.clone()),
            _ => SessionEnd::Closed,
        };
        if !drained.is_empty() {
            inner.shared.release_pending(drained.len());
            for (_, entry) in drained {
                let _ = entry
                    .waiter
                    .send(Err(PendingError::SessionEnded(why.clone())));
            }
        }
        inner.shared.remove(inner.id);
        tracing::debug!(session = %inner.id, kind = inner.kind, end = %why, "session ended");
    }

    /// Spawns a task that belongs to this session: it is on the session's tracker (and the registry's), it
    /// stops when the session's token is cancelled (yielding `None`), and a panic inside it fails the
    /// session with [`FailureReason::Panicked`].
    pub fn spawn<F>(&self, fut: F) -> Result<JoinHandle<Option<F::Output>>, SessionError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
        R: Send + 'static,
    {
        if self.is_ended() {
            return Err(SessionError::NotAccepting(self.state()));
        }
        let session = self.clone();
        let token = self.inner.token.clone();
        let task = async move {
            tokio::select! {
                biased;
                _ = token.cancelled() => None,
                outcome = AssertUnwindSafe(fut).catch_unwind() => match outcome {
                    Ok(value) => Some(value),
                    Err(_panic) => {
                        tracing::error!(session = %session.id(), "a session task panicked");
                        session.fail(FailureReason::Panicked);
                        None
                    }
                },
            }
        };
        let tracked = self
            .inner
            .shared
            .tracker
            .track_future(self.inner.tracker.track_future(task));
        Ok(tokio::spawn(tracked))
    }

    /// Records a pending request and returns its waiter. Fails with [`SessionError::TooManyRequests`] at the
    /// per-session or global limit, [`SessionError::DuplicateRequest`] if the id is already pending, and
    /// [`SessionError::NotAccepting`] once the session is shutting down or ended.
    pub fn insert_pending(
        &self,
        id: impl Into<RequestId>,
        kind: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Result<Pending<R>, SessionError> {
        let id = id.into();
        let shared = &*self.inner.shared;
        let limits = shared.config.pending;
        let started = Instant::now();
        let deadline = started + limits.deadline;
        let (tx, rx) = oneshot::channel();
        let generation = {
            let mut core = lock(&self.inner.core);
            if !core.state.accepts_work() {
                return Err(SessionError::NotAccepting(core.state.clone()));
            }
            if core.pending.len() >= limits.per_session {
                shared.metrics.pending_rejected_session.increment(1);
                return Err(SessionError::TooManyRequests {
                    scope: LimitScope::Session,
                    limit: limits.per_session,
                });
            }
            let generation = core.next_generation;
            match core.pending.entry(id.clone()) {
                MapEntry::Occupied(_) => return Err(duplicate(&id)),
                MapEntry::Vacant(slot) => {
                    if !shared.reserve_pending() {
                        return Err(SessionError::TooManyRequests {
                            scope: LimitScope::Global,
                            limit: limits.global,
                        });
                    }
                    slot.insert(Entry {
                        info: RequestInfo {
                            kind: kind.into(),
                            started,
                            deadline,
                        },
                        generation,
                        waiter: tx,
                    });
                }
            }
            core.next_generation += 1;
            generation
        };
        self.touch_at(started);
        Ok(Pending {
            session: self.clone(),
            id,
            generation,
            deadline,
            timeout: limits.deadline,
            rx,
        })
    }

    /// Takes a pending request out of the table in one atomic step, for its response. `None` if no such
    /// request is pending (never sent, answered already, timed out, or the session ended). A session with
    /// requests in flight is never idle (see the sweeper), so taking a response needs no clock read.
    pub fn take_pending(&self, id: &RequestId) -> Option<Taken<R>> {
        let entry = lock(&self.inner.core).pending.remove(id)?;
        self.inner.shared.release_pending(1);
        Some(Taken::new(entry.info, entry.waiter))
    }

    /// Takes the request `ticket` names out of the table, if it is still pending — not a later request
    /// that reused its id. For a waiter that gives up (its client went away): check and removal are one
    /// step under the table's lock.
    pub fn withdraw_pending(&self, ticket: &PendingTicket) -> Option<Taken<R>> {
        let entry = {
            let mut core = lock(&self.inner.core);
            match core.pending.get(ticket.id()) {
                Some(entry) if entry.generation == ticket.generation() => {
                    core.pending.remove(ticket.id())
                }
                _ => None,
            }
        }?;
        self.inner.shared.release_pending(1);
        Some(Taken::new(entry.info, entry.waiter))
    }

    /// Takes the pending request and delivers its response to the waiter; returns what was recorded about
    /// the request (kind, start time), or [`SessionError::NotPending`].
    pub fn respond(&self, id: &RequestId, response: R) -> Result<RequestInfo, SessionError> {
        match self.take_pending(id) {
            Some(taken) => Ok(taken.resolve(response)),
            None => Err(SessionError::NotPending(id.to_string())),
        }
    }

    /// The recorded info of a pending request, without taking it.
    pub fn pending_info(&self, id: &RequestId) -> Option<RequestInfo> {
        lock(&self.inner.core)
            .pending
            .get(id)
            .map(|e| e.info.clone())
    }

    /// Whether a request with this id is pending (cheaper than [`Session::pending_info`]: no copy).
    pub fn has_pending(&self, id: &RequestId) -> bool {
        lock(&self.inner.core).pending.contains_key(id)
    }

    /// How many requests are pending in this session.
    pub fn pending_len(&self) -> usize {
        lock(&self.inner.core).pending.len()
    }

    /// Removes the entry for a waiter whose deadline passed, if it is still that waiter's entry. True if
    /// this call removed it (so the timeout is the outcome).
    pub(crate) fn expire_pending(
        &self,
        id: &RequestId,
        generation: u64,
        _timeout: Duration,
    ) -> bool {
        let removed = {
            let mut core = lock(&self.inner.core);
            match core.pending.get(id) {
                Some(entry) if entry.generation == generation => core.pending.remove(id),
                _ => None,
            }
        };
        match removed {
            Some(_entry) => {
                self.inner.shared.release_pending(1);
                self.inner.shared.metrics.pending_timeouts.increment(1);
                true
            }
            None => false,
        }
    }

    /// Expires every entry past its deadline (the sweeper's pass for requests nobody waits on). Returns how
    /// many expired.
    pub(crate) fn expire_overdue(&self, now: Instant) -> usize {
        let expired: Vec<Entry<R>> = {
            let mut core = lock(&self.inner.core);
            if core.pending.is_empty() {
                return 0;
            }
            let due: Vec<RequestId> = core
                .pending
                .iter()
                .filter(|(_, e)| e.info.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            due.iter()
                .filter_map(|id| core.pending.remove(id))
                .collect()
        };
        let n = expired.len();
        if n > 0 {
            self.inner.shared.release_pending(n);
            self.inner
                .shared
                .metrics
                .pending_timeouts
                .increment(n as u64);
            for entry in expired {
                let waited = entry
                    .info
                    .deadline
                    .saturating_duration_since(entry.info.started);
                let _ = entry.waiter.send(Err(PendingError::Timeout(waited)));
            }
        }
        n
    }

    /// Attaches a connection to this session. The session ends as one: if the returned guard drops without
    /// [`ConnectionGuard::finish`] (an error, a lost socket), the session fails with
    /// [`FailureReason::ConnectionLost`], cancelling its other connections too.
    pub fn attach_connection(&self) -> Result<ConnectionGuard<R>, SessionError> {
        if self.is_ended() {
            return Err(SessionError::NotAccepting(self.state()));
        }
        let limit = self.inner.shared.config.max_connections_per_session;
        self.inner
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| SessionError::TooManyConnections { limit })?;
        self.touch();
        Ok(ConnectionGuard {
            session: self.clone(),
            finished: false,
        })
    }

    /// How many connections are attached.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.load(Ordering::Acquire)
    }
}

/// Ownership of a session's life, handed out by the registry when the session starts.
///
/// Dropping the guard ends the session: with [`SessionGuard::close`] first it ends Closed; dropped without it
/// (an early return, a `?`, a cancelled task) it ends Failed(Abandoned), or Failed(Panicked) while unwinding.
pub struct SessionGuard<R = ()> {
    session: Session<R>,
}

impl<R> SessionGuard<R> {
    pub(crate) fn new(session: Session<R>) -> Self {
        SessionGuard { session }
    }

    /// The session this guard owns.
    pub fn session(&self) -> &Session<R> {
        &self.session
    }

    /// Ends the session normally.
    pub fn close(self) {
        self.session.close();
    }

    /// Ends the session with a failure.
    pub fn fail(self, reason: FailureReason) {
        self.session.fail(reason);
    }
}

impl<R> Deref for SessionGuard<R> {
    type Target = Session<R>;
    fn deref(&self) -> &Session<R> {
        &self.session
    }
}

impl<R> fmt::Debug for SessionGuard<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SessionGuard").field(&self.session).finish()
    }
}

impl<R> Drop for SessionGuard<R> {
    fn drop(&mut self) {
        if !self.session.is_ended() {
            let reason = if std::thread::panicking() {
                FailureReason::Panicked
            } else {
                FailureReason::Abandoned
            };
            self.session.fail(reason);
        }
    }
}

/// One connection's membership in a session; see [`Session::attach_connection`].
pub struct ConnectionGuard<R = ()> {
    session: Session<R>,
    finished: bool,
}

impl<R> ConnectionGuard<R> {
    /// The session the connection belongs to.
    pub fn session(&self) -> &Session<R> {
        &self.session
    }

    /// The connection closed cleanly; the session goes on.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl<R> fmt::Debug for ConnectionGuard<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionGuard")
            .field("session", &self.session.id())
            .finish()
    }
}

impl<R> Drop for ConnectionGuard<R> {
    fn drop(&mut self) {
        self.session
            .inner
            .connections
            .fetch_sub(1, Ordering::AcqRel);
        if !self.finished {
            self.session.fail(FailureReason::ConnectionLost);
        }
    }
}
