//! Request/response correlation under races and load: exactly-once resolution and limits that hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tessera_session::{
    LimitScope, PendingError, Registry, RegistryConfig, RequestId, SessionError,
};

fn config(name: &'static str) -> RegistryConfig {
    let mut config = RegistryConfig::new(name);
    config.pending.per_session = 100_000;
    config.pending.global = 100_000;
    config
}

/// A response and the request's own timeout (plus the sweeper) race for the same entry; whichever wins, the
/// waiter sees exactly one outcome and the other side sees that it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn response_racing_timeout_resolves_exactly_once() {
    const ROUNDS: usize = 40;
    const PER_ROUND: usize = 500;
    let mut config = config("race");
    config.pending.deadline = Duration::from_millis(1);
    config.sweep_interval = Duration::from_millis(1);
    let registry: Registry<usize> = Registry::new(config);
    let session = registry.create("race").expect("create");
    session.activate().expect("activate");

    let (mut by_response, mut by_timeout) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let mut tasks = Vec::with_capacity(PER_ROUND);
        for i in 0..PER_ROUND {
            let n = (round * PER_ROUND + i) as i64;
            let pending = session.insert_pending(n, "race").expect("insert");
            let deadline = pending.deadline();
            let waiter = tokio::spawn(pending.wait());
            let responder_session = session.session().clone();
            let responder = tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                responder_session.respond(&RequestId::Num(n), n as usize)
            });
            tasks.push((n, waiter, responder));
        }
        for (n, waiter, responder) in tasks {
            let outcome = waiter.await.expect("waiter");
            let responded = responder.await.expect("responder");
            match (outcome, responded) {
                (Ok(v), Ok(info)) => {
                    assert_eq!(v, n as usize, "the response reached its own waiter");
                    assert_eq!(info.kind, "race");
                    by_response += 1;
                }
                (Err(PendingError::Timeout(_)), Err(SessionError::NotPending(_))) => {
                    by_timeout += 1
                }
                other => panic!("request {n} resolved inconsistently: {other:?}"),
            }
        }
    }
    assert_eq!(by_response + by_timeout, ROUNDS * PER_ROUND);
    assert_eq!(session.pending_len(), 0);
    assert_eq!(registry.pending_len(), 0);
    println!("race: {by_response} won by the response, {by_timeout} by the timeout");
}

/// Same race with nobody waiting: the sweeper expires, the responder takes; each entry goes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeper_and_responder_take_each_entry_once() {
    let mut config = config("race-sweeper");
    config.pending.deadline = Duration::from_millis(2);
    config.sweep_interval = Duration::from_millis(1);
    let registry: Registry<()> = Registry::new(config);
    let session = registry.create("race").expect("create");
    session.activate().expect("activate");
    let mut receivers = Vec::new();
    for n in 0..5_000i64 {
        let pending = session.insert_pending(n, "race").expect("insert");
        let s = session.session().clone();
        receivers.push(tokio::spawn(async move {
            tokio::time::sleep_until(pending.deadline()).await;
            let took = s.respond(&RequestId::Num(n), ()).is_ok();
            // The waiter is read only now: the sweeper may already have resolved it with a timeout.
            let outcome = pending.wait().await;
            (took, outcome)
        }));
    }
    for r in receivers {
        match r.await.expect("task") {
            (true, Ok(())) | (false, Err(PendingError::Timeout(_))) => {}
            other => panic!("inconsistent: {other:?}"),
        }
    }
    assert_eq!(registry.pending_len(), 0);
}

/// 100 concurrent tasks hammer each limit; exactly the limit gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_hold_under_100_concurrent_tasks() {
    // Session cap.
    let mut cfg = config("limits");
    cfg.max_sessions = 250;
    let registry: Registry<()> = Registry::new(cfg);
    let created = Arc::new(AtomicUsize::new(0));
    let rejected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (registry, created, rejected) = (registry.clone(), created.clone(), rejected.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..10 {
                match registry.create("limit") {
                    Ok(g) => {
                        created.fetch_add(1, Ordering::SeqCst);
                        held.push(g);
                    }
                    Err(SessionError::TooManySessions { limit: 250 }) => {
                        rejected.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
                tokio::task::yield_now().await;
            }
            held
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    assert_eq!(created.load(Ordering::SeqCst), 250);
    assert_eq!(rejected.load(Ordering::SeqCst), 750);
    assert_eq!(registry.len(), 250);
    for g in all {
        g.close();
    }
    assert_eq!(registry.len(), 0);
    assert!(registry.create("after").is_ok(), "slots come back");

    // Per-session pending limit.
    let mut cfg = config("limits-session");
    cfg.pending.per_session = 1000;
    let registry: Registry<()> = Registry::new(cfg);
    let session = registry.create("limit").expect("create");
    let ok = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..100i64 {
        let (s, ok) = (session.session().clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            let mut waiters = Vec::new();
            for i in 0..20i64 {
                match s.insert_pending(t * 100 + i, "m") {
                    Ok(w) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        waiters.push(w);
                    }
                    Err(SessionError::TooManyRequests {
                        scope: LimitScope::Session,
                        limit: 1000,
                    }) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
                tokio::task::yield_now().await;
            }
            waiters
        }));
    }
    let mut waiters = Vec::new();
    for t in tasks {
        waiters.extend(t.await.expect("task"));
    }
    assert_eq!(ok.load(Ordering::SeqCst), 1000);
    assert_eq!(session.pending_len(), 1000);
    session.close();
    assert_eq!(registry.pending_len(), 0);
    for w in waiters {
        assert!(matches!(w.wait().await, Err(PendingError::SessionEnded(_))));
    }

    // Global pending limit across sessions.
    let mut cfg = config("limits-global");
    cfg.pending.per_session = 1000;
    cfg.pending.global = 1500;
    let registry: Registry<()> = Registry::new(cfg);
    let sessions: Vec<_> = (0..4)
        .map(|_| registry.create("limit").expect("create"))
        .collect();
    let ok = Arc::new(AtomicUsize::new(0));
    let global_rejections = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..100i64 {
        let s = sessions[(t % 4) as usize].session().clone();
        let (ok, global_rejections) = (ok.clone(), global_rejections.clone());
        tasks.push(tokio::spawn(async move {
            let mut waiters = Vec::new();
            for i in 0..20i64 {
                match s.insert_pending(t * 100 + i, "m") {
                    Ok(w) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        waiters.push(w);
                    }
                    Err(SessionError::TooManyRequests {
                        scope: LimitScope::Global,
                        limit: 1500,
                    }) => {
                        global_rejections.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
                tokio::task::yield_now().await;
            }
            waiters
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.extend(t.await.expect("task"));
    }
    assert_eq!(ok.load(Ordering::SeqCst), 1500);
    assert_eq!(global_rejections.load(Ordering::SeqCst), 500);
    assert_eq!(registry.pending_len(), 1500);
    drop(held);
    drop(sessions);
    assert_eq!(registry.pending_len(), 0);
}

#[tokio::test]
async fn duplicate_ids_and_reuse_after_response() {
    let registry: Registry<u8> = Registry::new(config("dup"));
    let session = registry.create("dup").expect("create");
    let first = session.insert_pending("a", "initialize").expect("insert");
    assert_eq!(
        session.insert_pending("a", "initialize").err(),
        Some(SessionError::DuplicateRequest("\"a\"".into()))
    );
    let info = session.respond(&"a".into(), 1).expect("respond");
    assert_eq!(info.kind, "initialize");
    assert_eq!(first.wait().await, Ok(1));
    // The id is free again; a late duplicate response finds nothing.
    let second = session.insert_pending("a", "tools/list").expect("reuse");
    assert_eq!(
        session.pending_info(&"a".into()).map(|i| i.kind),
        Some("tools/list".into())
    );
    assert!(session.has_pending(&"a".into()));
    assert_eq!(
        session.respond(&"a".into(), 2).map(|i| i.kind),
        Ok("tools/list".into())
    );
    assert!(!session.has_pending(&"a".into()));
    assert!(matches!(
        session.respond(&"a".into(), 3),
        Err(SessionError::NotPending(_))
    ));
    assert_eq!(second.wait().await, Ok(2));
    // A taken but unresolved response tells the waiter it was abandoned.
    let third = session.insert_pending(7, "ping").expect("insert");
    drop(session.take_pending(&7.into()));
    assert_eq!(third.wait().await, Err(PendingError::Abandoned));
}

/// A stale waiter's timeout must never remove a newer request that reuses its id.
#[tokio::test(start_paused = true)]
async fn stale_timeout_never_removes_a_newer_request() {
    let mut cfg = config("generations");
    cfg.pending.deadline = Duration::from_secs(5);
    let registry: Registry<u8> = Registry::new(cfg);
    let session = registry.create("gen").expect("create");
    let old = session.insert_pending(1, "old").expect("insert");
    // The old request's response is taken (and held), then the id is reused by a new request.
    let taken = session.take_pending(&1.into()).expect("take");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let new = session.insert_pending(1, "new").expect("insert");
    let old_waiter = tokio::spawn(old.wait());
    // Past the old deadline: the old waiter's timer fires, finds a newer entry under its id, leaves it.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(
        !old_waiter.is_finished(),
        "the old waiter waits for the response that was taken"
    );
    assert_eq!(
        session.pending_info(&1.into()).map(|i| i.kind),
        Some("new".into())
    );
    taken.resolve(9);
    assert_eq!(old_waiter.await.expect("join"), Ok(9));
    assert!(matches!(new.wait().await, Err(PendingError::Timeout(_))));
    assert_eq!(registry.pending_len(), 0);
}

/// A waiter that gives up withdraws its own request only: after the request was answered and its id
/// reused, the old ticket takes nothing, and the new request is still answered.
#[tokio::test]
async fn a_ticket_withdraws_only_its_own_request() {
    let registry: Registry<&'static str> = Registry::new(config("tickets"));
    let session = registry.create("tickets").expect("create");
    session.activate().expect("activate");
    let first = session.insert_pending(7, "first").expect("insert");
    let old = first.ticket();
    session
        .respond(&RequestId::from(7), "answer")
        .expect("respond");
    assert_eq!(first.wait().await.expect("answered"), "answer");

    let second = session.insert_pending(7, "second").expect("reuse the id");
    assert!(
        session.withdraw_pending(&old).is_none(),
        "the old ticket took the new request"
    );
    assert!(session.has_pending(&RequestId::from(7)));
    let new = second.ticket();
    assert_ne!(old, new);
    // The new ticket withdraws it; the waiter learns it was abandoned, and the count is released.
    drop(session.withdraw_pending(&new).expect("withdrawn"));
    assert!(matches!(second.wait().await, Err(PendingError::Abandoned)));
    assert_eq!(session.pending_len(), 0);
    assert!(session.insert_pending(8, "after").is_ok());
}
