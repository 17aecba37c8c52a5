//! The deadlines of one stdio session's requests, kept by one task of the session rather than by a task
//! and a timer per request (a spawn, a timer and a wake-up per message were most of the stdio path's cost).
//!
//! Every request's deadline is its start plus the same timeout, so deadlines come in the order requests do:
//! a FIFO holds them, and the task sleeps until the first. An answered request leaves the waiting map at
//! once (its [`Pending`] is dropped: the runtime already resolved it, and nothing was woken); its FIFO slot
//! is skipped when reached, and the FIFO is compacted when stale slots outnumber live ones, so it stays
//! within twice the pending limit. When a deadline passes, the runtime's own [`McpSession::outcome`] decides
//! — exactly once, against a response that may be racing it — whether the request timed out.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tessera_session::Pending;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::jsonrpc::{Id, Message};
use crate::session::{Direction, Expired, McpSession};

/// The requests of one session waiting for their answers, by deadline.
#[derive(Default)]
pub(crate) struct Deadlines {
    inner: Mutex<Inner>,
    wake: Notify,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<String, Watched>,
    /// Deadlines in order, each with its request's key and watch number: a slot counts only while the
    /// request it was made for is still the one waiting under its key (a client may reuse an answered id).
    order: VecDeque<(Instant, String, u64)>,
    /// Watch numbers, one per [`Deadlines::watch`].
    watches: u64,
}

struct Watched {
    sender: Direction,
    id: Id,
    pending: Pending<Message>,
    /// Which watch this is (its FIFO slot carries the same number).
    watch: u64,
}

impl Inner {
    /// Whether the slot `(key, watch)` is still its request's.
    fn live(waiting: &HashMap<String, Watched>, key: &str, watch: u64) -> bool {
        waiting.get(key).is_some_and(|w| w.watch == watch)
    }
}

fn key(sender: Direction, id: &Id) -> String {
    let mut key = String::with_capacity(id.as_json().len() + 1);
    key.push(match sender {
        Direction::ClientToServer => 'c',
        Direction::ServerToClient => 's',
    });
    key.push_str(id.as_json());
    key
}

impl Deadlines {
    /// Watches request `id` of `sender` until `timeout` from now.
    pub(crate) fn watch(
        &self,
        sender: Direction,
        id: Id,
        pending: Pending<Message>,
        timeout: Duration,
    ) {
        let key = key(sender, &id);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let was_empty = inner.order.is_empty();
        inner.watches += 1;
        let watch = inner.watches;
        inner
            .order
            .push_back((Instant::now() + timeout, key.clone(), watch));
        inner.waiting.insert(
            key,
            Watched {
                sender,
                id,
                pending,
                watch,
            },
        );
        if inner.order.len() > 2 * inner.waiting.len() + 64 {
            let Inner { waiting, order, .. } = &mut *inner;
            order.retain(|(_, k, w)| Inner::live(waiting, k, *w));
        }
        drop(inner);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Request `id` of `sender` was answered or withdrawn: no deadline applies any more.
    pub(crate) fn settled(&self, sender: Direction, id: &Id) {
        let watched = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .waiting
            .remove(&key(sender, id));
        drop(watched);
    }

    /// Requests watched now, and FIFO slots (live and stale).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (inner.waiting.len(), inner.order.len())
    }

    /// Runs until the session ends (as one of its tasks): `on_expired` gets each request whose deadline
    /// passed without an answer.
    pub(crate) async fn run<F, Fut>(&self, mut on_expired: F)
    where
        F: FnMut(Direction, Id, Expired) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let next = {
                let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
                let Inner { waiting, order, .. } = &mut *inner;
                while order
                    .front()
                    .is_some_and(|(_, k, w)| !Inner::live(waiting, k, *w))
                {
                    order.pop_front();
                }
                order.front().map(|(at, _, _)| *at)
            };
            match next {
                None => self.wake.notified().await,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.wake.notified() => continue,
                    }
                }
            }
            let now = Instant::now();
            let due: Vec<Watched> = {
                let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
                let Inner { waiting, order, .. } = &mut *inner;
                let mut due = Vec::new();
                while let Some((at, _, _)) = order.front() {
                    if *at > now {
                        break;
                    }
                    if let Some((_, k, w)) = order.pop_front()
                        && Inner::live(waiting, &k, w)
                        && let Some(watched) = waiting.remove(&k)
                    {
                        due.push(watched);
                    }
                }
                due
            };
            for watched in due {
                if let Err(Some(expired)) = McpSession::outcome(watched.pending, &watched.id).await
                {
                    on_expired(watched.sender, watched.id, expired).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::{McpConfig, Sessions};

    fn request(id: u64) -> Message {
        Message::parse(Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call"}}"#
        )))
        .unwrap()
    }

    fn response(id: u64) -> Message {
        Message::parse(Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#
        )))
        .unwrap()
    }

    type Expiries = tokio::sync::mpsc::UnboundedReceiver<(Direction, Id)>;

    /// A deadline table with its task running; each expiry's sender and id come out of the receiver.
    fn running() -> (Arc<Deadlines>, Expiries, tokio::task::JoinHandle<()>) {
        let deadlines = Arc::new(Deadlines::default());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let runner = deadlines.clone();
        let task = tokio::spawn(async move {
            runner
                .run(|sender, id, _expired| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send((sender, id));
                    }
                })
                .await;
        });
        (deadlines, rx, task)
    }

    #[tokio::test]
    async fn answered_requests_leave_and_the_fifo_stays_bounded() {
        let mut config = McpConfig::default();
        config.pending.deadline = Duration::from_millis(200);
        let sessions = Sessions::new(config);
        let (_guard, mcp) = sessions.create("test").unwrap();
        let (deadlines, mut rx, task) = running();
        // Ten thousand answered requests, one unanswered among the first.
        let slow = request(0);
        let pending = mcp.track_request(Direction::ClientToServer, &slow).unwrap();
        deadlines.watch(
            Direction::ClientToServer,
            Id::number(0),
            pending,
            mcp.deadline(),
        );
        for n in 1..=10_000 {
            let pending = mcp
                .track_request(Direction::ClientToServer, &request(n))
                .unwrap();
            deadlines.watch(
                Direction::ClientToServer,
                Id::number(n as i64),
                pending,
                mcp.deadline(),
            );
            assert!(
                mcp.correlate_response(Direction::ServerToClient, &response(n))
                    .is_some()
            );
            deadlines.settled(Direction::ClientToServer, &Id::number(n as i64));
            let (live, slots) = deadlines.sizes();
            assert_eq!(live, 1);
            assert!(slots <= 2 * (live + 1) + 65, "{slots} slots");
        }
        // Only the unanswered one expires, once.
        let (sender, id) = rx.recv().await.unwrap();
        assert_eq!((sender, id.as_json()), (Direction::ClientToServer, "0"));
        assert_eq!(deadlines.sizes().0, 0);
        assert_eq!(mcp.session().pending_len(), 0);
        assert!(rx.try_recv().is_err());
        task.abort();
    }

    /// A client may reuse the id of an answered request: the old request's FIFO slot must not take the
    /// new one before its time (the deadline task would then wait on it, holding back every expiry due
    /// in between).
    #[tokio::test]
    async fn a_reused_id_keeps_its_own_deadline() {
        let mut config = McpConfig::default();
        config.pending.deadline = Duration::from_millis(1_000);
        let sessions = Sessions::new(config);
        let (_guard, mcp) = sessions.create("test").unwrap();
        let (deadlines, mut rx, task) = running();
        let watch = |n: u64| {
            let pending = mcp
                .track_request(Direction::ClientToServer, &request(n))
                .unwrap();
            deadlines.watch(
                Direction::ClientToServer,
                Id::number(n as i64),
                pending,
                mcp.deadline(),
            );
        };
        // Id 1, answered at once (once the task sleeps until its deadline); id 2 unanswered; then id 1
        // again, 800 ms later.
        watch(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            mcp.correlate_response(Direction::ServerToClient, &response(1))
                .is_some()
        );
        deadlines.settled(Direction::ClientToServer, &Id::number(1));
        let started = Instant::now();
        watch(2);
        tokio::time::sleep(Duration::from_millis(800)).await;
        watch(1);
        // Id 2 expires at its deadline (1 s), not once the reused id 1's runs out (1.8 s).
        let (_, first) = rx.recv().await.unwrap();
        assert_eq!(first.as_json(), "2");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1_500),
            "id 2 expired after {took:?}"
        );
        assert_eq!(deadlines.sizes().0, 1, "the reused id 1 is still watched");
        let (_, second) = rx.recv().await.unwrap();
        assert_eq!(second.as_json(), "1");
        task.abort();
    }
}
