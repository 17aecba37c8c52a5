//! 10,000 sessions ended on every exit path leave zero sessions, zero pending entries and zero live tasks,
//! counted by the registry, the session task trackers and tokio's own runtime metrics.

use std::time::Duration;

use tessera_session::{FailureReason, PendingError, Registry, RegistryConfig, SessionState};

const SESSIONS: usize = 10_000;
const PATHS: usize = 7;

/// Waits (by yielding, not sleeping) until `done` holds, failing the test after `limit`.
async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let result = tokio::time::timeout(limit, async {
        while !done() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(result.is_ok(), "timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exit_path_cleans_up_everything() {
    // Panics are one of the exit paths: keep their messages out of the test output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let on_purpose = info
            .payload()
            .downcast_ref::<&str>()
            .is_some_and(|m| m.contains("on purpose"));
        if !on_purpose {
            default_hook(info);
        }
    }));
    let metrics = tokio::runtime::Handle::current().metrics();

    let mut config = RegistryConfig::new("exit-paths");
    config.max_sessions = SESSIONS;
    config.idle_timeout = Duration::from_millis(300);
    config.sweep_interval = Duration::from_millis(20);
    let registry: Registry<u32> = Registry::new(config);
    let baseline_tasks = metrics.num_alive_tasks();

    let mut waiters = Vec::new();
    let mut aborts = Vec::new();
    let mut external = Vec::new();
    let mut dropped_connections = Vec::new();
    let mut idle = Vec::new();
    for i in 0..SESSIONS {
        let path = i % PATHS;
        let guard = registry.create("test").expect("below the cap");
        guard.activate().expect("activate");
        // Every session but the idle ones has a pending request someone waits on (a request in flight keeps
        // a session from being idle), and every session has a child task that never ends by itself.
        if path != 4 {
            let pending = guard.insert_pending(1, "tools/call").expect("insert");
            waiters.push(tokio::spawn(pending.wait()));
        }
        let session = guard.session().clone();
        session
            .spawn(std::future::pending::<()>())
            .expect("spawn child task");
        match path {
            // Normal close from the main task.
            0 => {
                session.spawn(async move { guard.close() }).expect("spawn");
            }
            // An error path: the guard is dropped by an early return.
            1 => {
                session
                    .spawn(async move {
                        let _guard = guard;
                        let r: Result<(), &str> = Err("boom");
                        r?;
                        Ok::<(), &str>(())
                    })
                    .expect("spawn");
            }
            // A panic inside the session's task.
            2 => {
                session
                    .spawn(async move {
                        let _guard = guard;
                        if i < usize::MAX {
                            panic!("session task panicked on purpose");
                        }
                    })
                    .expect("spawn");
            }
            // Cancellation: the task holding the guard is aborted from outside.
            3 => {
                aborts.push(tokio::spawn(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await
                }));
            }
            // Timeout: nothing happens, the sweeper ends the session when it is idle.
            4 => {
                idle.push(session.clone());
                tokio::spawn(async move {
                    let _guard = guard;
                    session.ended().await;
                });
            }
            // Failed from outside (e.g. by another connection's handler).
            5 => {
                external.push(guard.session().clone());
                session
                    .spawn(async move {
                        let _guard = guard;
                        std::future::pending::<()>().await
                    })
                    .expect("spawn");
            }
            // A lost connection ends the whole session.
            _ => {
                let connection = guard.attach_connection().expect("attach");
                dropped_connections.push(connection);
                session
                    .spawn(async move {
                        let _guard = guard;
                        std::future::pending::<()>().await
                    })
                    .expect("spawn");
            }
        }
    }
    for task in &aborts {
        task.abort();
    }
    for session in &external {
        assert!(session.fail(FailureReason::error("ended from outside")));
    }
    let states: Vec<_> = external.iter().map(|s| s.state()).collect();
    drop(dropped_connections);

    tokio::time::timeout(Duration::from_secs(30), registry.wait_empty())
        .await
        .expect("every session ended");
    assert_eq!(registry.len(), 0);
    assert_eq!(registry.pending_len(), 0);
    assert!(registry.sessions().is_empty());

    // Every waiter learned why its request ended, exactly once.
    let mut ended_reasons = std::collections::HashMap::<&'static str, usize>::new();
    for waiter in waiters {
        match waiter.await.expect("waiter task") {
            Err(PendingError::SessionEnded(end)) => {
                *ended_reasons.entry(end.label()).or_default() += 1
            }
            other => panic!("unexpected waiter outcome {other:?}"),
        }
    }
    let per_path = SESSIONS / PATHS;
    for label in [
        "closed",
        "abandoned",
        "panicked",
        "error",
        "connection_lost",
    ] {
        assert!(
            ended_reasons.get(label).copied().unwrap_or(0) >= per_path,
            "{label}: {ended_reasons:?}"
        );
    }
    assert_eq!(ended_reasons.values().sum::<usize>(), SESSIONS - idle.len());
    assert!(idle.len() >= per_path);
    assert!(
        idle.iter()
            .all(|s| s.state() == SessionState::Failed(FailureReason::IdleTimeout))
    );
    assert!(
        states
            .iter()
            .all(|s| matches!(s, SessionState::Failed(FailureReason::Error(_))))
    );

    // No task of any session is left, by the registry's tracker and by tokio's count.
    eventually(Duration::from_secs(10), "session tasks to stop", || {
        registry.tasks().is_empty()
    })
    .await;
    drop(aborts);
    eventually(Duration::from_secs(10), "runtime tasks to drain", || {
        metrics.num_alive_tasks() <= baseline_tasks
    })
    .await;
}
