//! The session registry: where sessions are found by id, capped, swept and shut down.
//!
//! Sessions live in 16 shards keyed by their random id, so two threads creating or ending sessions rarely
//! touch the same lock. The live-session cap is reserved with one compare-and-swap before the session is
//! inserted, so the cap can never be exceeded, not even for a moment.
//!
//! A sweeper task, started by [`Registry::new`], ends sessions idle past the idle timeout or older than the
//! maximum age, and expires pending requests past their deadline that nobody is waiting on.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::SessionError;
use crate::id::SessionId;
use crate::metrics::Metrics;
use crate::pending::{PendingLimits, RequestId, RequestInfo, Taken};
use crate::session::{Session, SessionGuard, lock};
use crate::state::{FailureReason, SessionState};

const SHARDS: usize = 16;

/// Configuration of a [`Registry`].
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The service name, used as the `service` label of every metric.
    pub name: &'static str,
    /// Most sessions alive at once (default 10,000).
    pub max_sessions: usize,
    /// A session with no activity and no request in flight for this long is ended (default 30 s).
    pub idle_timeout: Duration,
    /// A session older than this is ended, however active (default 24 h; `None` for no limit).
    pub max_age: Option<Duration>,
    /// How often the sweeper runs (default 1 s).
    pub sweep_interval: Duration,
    /// Pending-request limits and deadline.
    pub pending: PendingLimits,
    /// Most connections attached to one session at once (default 16).
    pub max_connections_per_session: usize,
}

impl RegistryConfig {
    /// Defaults, with the given service name.
    pub fn new(name: &'static str) -> Self {
        RegistryConfig {
            name,
            max_sessions: 10_000,
            idle_timeout: Duration::from_secs(30),
            max_age: Some(Duration::from_secs(24 * 3600)),
            sweep_interval: Duration::from_secs(1),
            pending: PendingLimits::default(),
            max_connections_per_session: 16,
        }
    }
}

/// What sessions share with their registry: configuration, the session map and counters, metrics, and the
/// tracker of every session task. A session holds it strongly and takes itself out of the map when it ends,
/// which is also what breaks the session → shared → map → session cycle; dropping the last [`Registry`]
/// handle ends every session still live.
pub(crate) struct Shared<R> {
    pub(crate) config: RegistryConfig,
    shards: [Shard<R>; SHARDS],
    live: AtomicUsize,
    accepting: AtomicBool,
    empty: Notify,
    /// How many [`Registry::wait_empty`] calls are waiting: `remove` only wakes them when there are some.
    empty_waiters: AtomicUsize,
    pending_global: AtomicUsize,
    pub(crate) metrics: Metrics,
    pub(crate) tracker: TaskTracker,
}

impl<R> Shared<R> {
    /// Reserves one slot under the global pending limit, in one atomic step.
    pub(crate) fn reserve_pending(&self) -> bool {
        let limit = self.config.pending.global;
        let ok = self
            .pending_global
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if ok {
            self.metrics.pending.increment(1.0);
        } else {
            self.metrics.pending_rejected_global.increment(1);
        }
        ok
    }

    pub(crate) fn release_pending(&self, n: usize) {
        self.pending_global.fetch_sub(n, Ordering::AcqRel);
        self.metrics.pending.decrement(n as f64);
    }

    fn shard(&self, id: SessionId) -> &Shard<R> {
        &self.shards[(id.as_u128() as usize) % SHARDS]
    }

    /// Takes an ended session out of the map. Called once per session, by its end.
    pub(crate) fn remove(&self, id: SessionId) {
        if lock(self.shard(id)).remove(&id).is_some() {
            self.metrics.live.decrement(1.0);
            if self.live.fetch_sub(1, Ordering::SeqCst) == 1
                && self.empty_waiters.load(Ordering::SeqCst) > 0
            {
                self.empty.notify_waiters();
            }
        }
    }

    fn snapshot(&self) -> Vec<Session<R>> {
        let mut all = Vec::with_capacity(self.live.load(Ordering::Relaxed));
        for shard in &self.shards {
            all.extend(lock(shard).values().cloned());
        }
        all
    }
}

/// Session ids are uniformly random, so their high bits are already a good hash (the low bits pick the shard).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = (n >> 64) as u64;
    }
}

type Shard<R> = Mutex<HashMap<SessionId, Session<R>, BuildHasherDefault<IdHasher>>>;

/// Behind every [`Registry`] handle; when the last handle goes, so do the sweeper and every live session.
pub(crate) struct RegistryInner<R> {
    shared: Arc<Shared<R>>,
    sweeper: CancellationToken,
}

impl<R> Drop for RegistryInner<R> {
    fn drop(&mut self) {
        self.sweeper.cancel();
        for session in self.shared.snapshot() {
            session.fail(FailureReason::Shutdown);
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Sessions ended for idleness.
    pub idle: usize,
    /// Sessions ended for age.
    pub aged: usize,
    /// Pending requests expired.
    pub expired_requests: usize,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Sessions that ended by themselves within the grace period.
    pub finished: usize,
    /// Sessions cancelled when the grace period ran out.
    pub cancelled: usize,
}

/// The registry of one service's sessions. `R` is the type of the responses its pending requests await.
/// Cheap to clone; clones share the same sessions.
pub struct Registry<R = ()> {
    inner: Arc<RegistryInner<R>>,
}

impl<R> Clone for Registry<R> {
    fn clone(&self) -> Self {
        Registry {
            inner: self.inner.clone(),
        }
    }
}

impl<R> fmt::Debug for Registry<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("name", &self.inner.shared.config.name)
            .field("live", &self.inner.shared.live.load(Ordering::Relaxed))
            .finish()
    }
}

impl<R: Send + 'static> Registry<R> {
    /// Creates a registry and starts its sweeper. Must be called within a Tokio runtime.
    pub fn new(config: RegistryConfig) -> Self {
        let shared = Arc::new(Shared {
            metrics: Metrics::new(config.name),
            config,
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
            live: AtomicUsize::new(0),
            accepting: AtomicBool::new(true),
            empty: Notify::new(),
            empty_waiters: AtomicUsize::new(0),
            pending_global: AtomicUsize::new(0),
            tracker: TaskTracker::new(),
        });
        let sweeper = CancellationToken::new();
        spawn_sweeper(
            Arc::downgrade(&shared),
            sweeper.clone(),
            shared.config.sweep_interval,
        );
        Registry {
            inner: Arc::new(RegistryInner { shared, sweeper }),
        }
    }

    /// The configuration this registry runs with.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.shared.config
    }

    /// Starts a session (state Initializing) and returns the guard that owns its life. Fails with
    /// [`SessionError::TooManySessions`] at the cap and [`SessionError::RegistryShuttingDown`] during
    /// shutdown.
    pub fn create(&self, kind: &'static str) -> Result<SessionGuard<R>, SessionError> {
        let inner = &*self.inner.shared;
        if !inner.accepting.load(Ordering::Acquire) {
            return Err(SessionError::RegistryShuttingDown);
        }
        let limit = inner.config.max_sessions;
        if inner
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_err()
        {
            inner.metrics.rejected.increment(1);
            return Err(SessionError::TooManySessions { limit });
        }
        let session = loop {
            let id = SessionId::random();
            let mut shard = lock(inner.shard(id));
            if let std::collections::hash_map::Entry::Vacant(slot) = shard.entry(id) {
                let session = Session::new(id, kind, self.inner.shared.clone());
                slot.insert(session.clone());
                break session;
            }
        };
        inner.metrics.live.increment(1.0);
        inner.metrics.moved(None, &SessionState::Initializing);
        Ok(SessionGuard::new(session))
    }

    /// Starts a session and runs `f` as its main task. The session ends when the task does: Closed if it
    /// returns `Ok`, Failed(Error) if it returns `Err`, Failed(Panicked) if it panics; and the task stops if
    /// the session is ended from outside (timeout, shutdown).
    pub fn spawn<F, Fut, E>(&self, kind: &'static str, f: F) -> Result<Session<R>, SessionError>
    where
        F: FnOnce(Session<R>) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        let guard = self.create(kind)?;
        let session = guard.session().clone();
        let main = f(session.clone());
        session.spawn(async move {
            match main.await {
                Ok(()) => guard.close(),
                Err(e) => guard.fail(FailureReason::error(e)),
            }
        })?;
        Ok(session)
    }

    /// The live session with this id.
    pub fn get(&self, id: SessionId) -> Option<Session<R>> {
        lock(self.inner.shared.shard(id)).get(&id).cloned()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.inner.shared.live.load(Ordering::Acquire)
    }

    /// True if no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of pending requests across all sessions.
    pub fn pending_len(&self) -> usize {
        self.inner.shared.pending_global.load(Ordering::Acquire)
    }

    /// A snapshot of the live sessions.
    pub fn sessions(&self) -> Vec<Session<R>> {
        self.inner.shared.snapshot()
    }

    /// The tracker of every task of every session of this registry; `len()` counts the live ones.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.shared.tracker
    }

    /// Takes pending request `request` of session `session` in one atomic step (see [`Session::take_pending`]).
    pub fn take_pending(&self, session: SessionId, request: &RequestId) -> Option<Taken<R>> {
        self.get(session)?.take_pending(request)
    }

    /// Delivers a response to pending request `request` of session `session`.
    pub fn respond(
        &self,
        session: SessionId,
        request: &RequestId,
        response: R,
    ) -> Result<RequestInfo, SessionError> {
        match self.take_pending(session, request) {
            Some(taken) => Ok(taken.resolve(response)),
            None => Err(SessionError::NotPending(request.to_string())),
        }
    }

    /// One sweep: ends idle and over-age sessions and expires overdue pending requests. The sweeper task
    /// calls this every `sweep_interval`; it is public so a caller can force a sweep.
    pub fn sweep(&self) -> SweepReport {
        sweep(&self.inner.shared)
    }

    /// Completes when no session is live.
    pub async fn wait_empty(&self) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let shared = &*self.inner.shared;
        shared.empty_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&shared.empty_waiters);
        loop {
            let notified = shared.empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.live.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Graceful shutdown: stop accepting sessions, ask every live session to shut down, let them finish
    /// within `grace`, then cancel the rest, and wait until every task of every session has stopped.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let inner = &*self.inner;
        inner.shared.accepting.store(false, Ordering::Release);
        let at_start = self.sessions();
        for session in &at_start {
            let _ = session.transition(SessionState::ShuttingDown);
        }
        let _ = tokio::time::timeout(grace, self.wait_empty()).await;
        let mut cancelled = 0;
        for session in self.sessions() {
            if session.fail(FailureReason::Shutdown) {
                cancelled += 1;
            }
        }
        inner.sweeper.cancel();
        inner.shared.tracker.close();
        inner.shared.tracker.wait().await;
        ShutdownReport {
            finished: at_start.len().saturating_sub(cancelled),
            cancelled,
        }
    }
}

fn sweep<R>(inner: &Shared<R>) -> SweepReport {
    let config = &inner.config;
    let now = Instant::now();
    let mut report = SweepReport::default();
    for session in inner.snapshot() {
        if config.max_age.is_some_and(|max| session.age() >= max) {
            if session.fail(FailureReason::MaxAge) {
                report.aged += 1;
            }
        } else if session.idle_for() >= config.idle_timeout && session.pending_len() == 0 {
            if session.fail(FailureReason::IdleTimeout) {
                report.idle += 1;
            }
        } else {
            report.expired_requests += session.expire_overdue(now);
        }
    }
    if report != SweepReport::default() {
        tracing::debug!(service = config.name, ?report, "sweep");
    }
    report
}

fn spawn_sweeper<R: Send + 'static>(
    registry: Weak<Shared<R>>,
    stop: CancellationToken,
    every: Duration,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(inner) = registry.upgrade() else {
                return;
            };
            sweep(&inner);
        }
    });
}
