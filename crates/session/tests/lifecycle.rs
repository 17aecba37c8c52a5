//! Idle timeout and maximum age enforced by the sweeper task itself, and graceful shutdown.

use std::time::Duration;

use tessera_session::{FailureReason, Registry, RegistryConfig, SessionError, SessionState};

#[tokio::test(start_paused = true)]
async fn the_sweeper_ends_idle_sessions_and_activity_postpones_it() {
    let registry: Registry<()> = Registry::new(RegistryConfig::new("idle"));
    let busy = registry.create("busy").expect("create");
    let idle = registry.create("idle").expect("create");
    let started = tokio::time::Instant::now();
    // `busy` sees activity every 10 s; `idle` sees none. Nobody calls sweep(): the sweeper task runs.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        busy.touch();
    }
    assert!(idle.is_ended());
    assert_eq!(
        idle.state(),
        SessionState::Failed(FailureReason::IdleTimeout)
    );
    assert!(!busy.is_ended(), "activity refreshed the idle timeout");
    assert_eq!(registry.len(), 1);
    busy.ended().await;
    assert_eq!(
        busy.state(),
        SessionState::Failed(FailureReason::IdleTimeout)
    );
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_secs(80) && lived <= Duration::from_secs(82),
        "{lived:?}"
    );
    assert!(registry.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_enforces_max_age_however_active() {
    let mut config = RegistryConfig::new("age");
    config.max_age = Some(Duration::from_secs(60));
    let registry: Registry<()> = Registry::new(config);
    let session = registry.create("old").expect("create");
    session.activate().expect("activate");
    let keep_busy = {
        let s = session.session().clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                s.touch();
            }
        }
    };
    tokio::select! {
        _ = keep_busy => unreachable!(),
        _ = session.ended() => {}
    }
    assert_eq!(session.state(), SessionState::Failed(FailureReason::MaxAge));
    assert!(session.age() >= Duration::from_secs(60) && session.age() <= Duration::from_secs(62));
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_expires_requests_nobody_waits_for() {
    let registry: Registry<()> = Registry::new(RegistryConfig::new("expiry"));
    let session = registry.create("s").expect("create");
    drop(session.insert_pending(1, "tools/call").expect("insert"));
    assert_eq!(registry.pending_len(), 1);
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(registry.pending_len(), 1);
    session.touch();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        registry.pending_len(),
        0,
        "expired at its 30 s deadline by the sweeper"
    );
    assert!(matches!(
        session.respond(&1.into(), ()),
        Err(SessionError::NotPending(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_lets_sessions_finish_then_cancels_the_rest() {
    let mut config = RegistryConfig::new("shutdown");
    config.idle_timeout = Duration::from_secs(3600);
    let registry: Registry<()> = Registry::new(config);

    // A well-behaved session: finishes its work when asked to shut down, after 2 s of cleanup.
    let polite = registry
        .spawn("polite", |session| async move {
            session.activate().map_err(|e| e.to_string())?;
            session.shutdown_requested().await;
            assert_eq!(session.state(), SessionState::ShuttingDown);
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<(), String>(())
        })
        .expect("spawn");
    // A session that ignores the request.
    let stubborn = registry
        .spawn("stubborn", |session| async move {
            session.activate().map_err(|e| e.to_string())?;
            std::future::pending::<Result<(), String>>().await
        })
        .expect("spawn");
    tokio::task::yield_now().await;
    assert_eq!(registry.len(), 2);

    let report = registry.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.finished, 1);
    assert_eq!(report.cancelled, 1);
    assert_eq!(polite.state(), SessionState::Closed);
    assert_eq!(
        stubborn.state(),
        SessionState::Failed(FailureReason::Shutdown)
    );
    assert!(registry.is_empty());
    assert!(registry.tasks().is_empty(), "every task has stopped");
    assert!(matches!(
        registry.create("late"),
        Err(SessionError::RegistryShuttingDown)
    ));
}

#[tokio::test]
async fn a_spawned_session_ends_with_its_main_task() {
    let registry: Registry<()> = Registry::new(RegistryConfig::new("spawned"));
    let ok = registry
        .spawn("ok", |_| async { Ok::<(), String>(()) })
        .expect("spawn");
    let err = registry
        .spawn("err", |_| async { Err::<(), _>("no such tool") })
        .expect("spawn");
    ok.ended().await;
    err.ended().await;
    assert_eq!(ok.state(), SessionState::Closed);
    assert_eq!(
        err.state(),
        SessionState::Failed(FailureReason::error("no such tool"))
    );
    assert!(registry.is_empty());
}

#[tokio::test]
async fn illegal_transitions_are_rejected_and_change_nothing() {
    let registry: Registry<()> = Registry::new(RegistryConfig::new("transitions"));
    let session = registry.create("t").expect("create");
    assert!(matches!(
        session.transition(SessionState::Initializing),
        Err(SessionError::IllegalTransition(_))
    ));
    session.activate().expect("initializing -> active");
    assert!(session.activate().is_err(), "active -> active");
    session
        .transition(SessionState::ShuttingDown)
        .expect("active -> shutting down");
    assert!(session.activate().is_err(), "shutting down -> active");
    assert!(matches!(
        session.insert_pending(1, "x"),
        Err(SessionError::NotAccepting(SessionState::ShuttingDown))
    ));
    let handle = session.session().clone();
    assert!(handle.close());
    assert!(!handle.fail(FailureReason::Panicked), "closed -> failed");
    assert_eq!(handle.state(), SessionState::Closed);
    assert!(handle.transition(SessionState::Active).is_err());
    drop(session);
    assert_eq!(
        handle.state(),
        SessionState::Closed,
        "dropping the guard changes nothing after close"
    );
}
