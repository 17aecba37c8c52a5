//! Serial processing in arrival order, one writer per connection, and several connections ending as one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tessera_session::{
    FailureReason, Handler, Registry, RegistryConfig, SessionState, pipe, spawn_processor,
    spawn_writer,
};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

/// Records what it handles and proves no two messages are ever in flight at once.
struct Recorder {
    busy: Arc<AtomicBool>,
    seen: mpsc::UnboundedSender<(u32, u32)>,
}

impl Handler<(u32, u32)> for Recorder {
    type Error = String;
    async fn handle(&mut self, message: (u32, u32)) -> Result<(), String> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err("two messages in flight at once".into());
        }
        // Yield inside the handler so a concurrent second call, if the runtime allowed one, would overlap.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        self.busy.store(false, Ordering::SeqCst);
        self.seen.send(message).map_err(|e| e.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_are_handled_one_at_a_time_in_arrival_order() {
    let registry: Registry<()> = Registry::new(RegistryConfig::new("serial"));
    let session = registry.create("serial").expect("create");
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let inbox = spawn_processor(
        &session,
        8,
        Recorder {
            busy: Arc::new(AtomicBool::new(false)),
            seen: seen_tx,
        },
    )
    .expect("processor");

    // 20 producers, 200 messages each, all at once through a small queue.
    let mut producers = Vec::new();
    for p in 0..20u32 {
        let inbox = inbox.clone();
        producers.push(tokio::spawn(async move {
            for n in 0..200u32 {
                inbox.send((p, n)).await.expect("processor alive");
            }
        }));
    }
    for p in producers {
        p.await.expect("producer");
    }
    drop(inbox);
    let mut next = [0u32; 20];
    let mut total = 0;
    while let Some((p, n)) = seen_rx.recv().await {
        assert_eq!(
            n, next[p as usize],
            "producer {p}'s messages arrived out of order"
        );
        next[p as usize] += 1;
        total += 1;
    }
    assert_eq!(total, 4000);
    assert!(!session.is_ended(), "no handler error: never two in flight");
    session.close();
}

#[tokio::test]
async fn a_stream_is_piped_in_order_and_a_handler_error_fails_the_session() {
    struct FailAt(u32, mpsc::UnboundedSender<u32>);
    impl Handler<u32> for FailAt {
        type Error = String;
        async fn handle(&mut self, n: u32) -> Result<(), String> {
            if n == self.0 {
                return Err(format!("bad message {n}"));
            }
            self.1.send(n).map_err(|e| e.to_string())
        }
    }
    let registry: Registry<()> = Registry::new(RegistryConfig::new("pipe"));
    let session = registry.create("pipe").expect("create");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let inbox = spawn_processor(&session, 4, FailAt(50, tx)).expect("processor");
    // The stream is longer than what the processor accepts: pipe stops when the processor is gone.
    let _ = pipe(futures_util::stream::iter(0..1000u32), &inbox).await;
    session.ended().await;
    assert_eq!(
        session.state(),
        SessionState::Failed(FailureReason::error("bad message 50"))
    );
    let mut got = Vec::new();
    while let Some(n) = rx.recv().await {
        got.push(n);
    }
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    assert!(registry.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_delivers_every_message_whole_and_a_dead_sink_fails_the_session() {
    let registry: Registry<()> = Registry::new(RegistryConfig::new("writer"));
    let session = registry.create("writer").expect("create");
    let (sink_tx, mut sink_rx) = mpsc::channel::<Vec<u8>>(4);
    let outbox = spawn_writer(&session, PollSender::new(sink_tx), 16).expect("writer");
    let mut writers = Vec::new();
    for w in 0..50u8 {
        let outbox = outbox.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..20 {
                outbox.send(vec![w; 64]).await.expect("writer alive");
            }
        }));
    }
    let mut received = 0;
    while received < 1000 {
        let frame = sink_rx.recv().await.expect("frame");
        assert!(
            frame.iter().all(|b| *b == frame[0]),
            "frames never interleave"
        );
        received += 1;
    }
    for w in writers {
        w.await.expect("writer task");
    }
    // The socket goes away: the next write fails and the session fails with it.
    drop(sink_rx);
    outbox.send(vec![1]).await.expect("queued");
    session.ended().await;
    assert_eq!(
        session.state(),
        SessionState::Failed(FailureReason::ConnectionLost)
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        while !outbox.is_closed() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("writer task stopped");
}

/// A TEE-like session: three connections, each with its own task; losing one ends the session as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_connections_end_as_one() {
    let registry: Registry<()> = Registry::new(RegistryConfig::new("multi"));
    let guard = registry.create("tee").expect("create");
    guard.activate().expect("activate");
    let id = guard.id();

    // The other two connections find the session by id, as TEE_T does for TEE_K's connection.
    let mut handles = Vec::new();
    for _ in 0..3 {
        let session = registry.get(id).expect("live");
        let connection = session.attach_connection().expect("attach");
        let task = session
            .spawn(async move {
                let _connection = connection;
                std::future::pending::<()>().await
            })
            .expect("spawn");
        handles.push(task);
    }
    assert_eq!(guard.connection_count(), 3);
    assert_eq!(guard.tasks().len(), 3);

    // One connection's task fails (here: is aborted, as when its socket task dies).
    handles[1].abort();
    guard.ended().await;
    assert_eq!(
        guard.state(),
        SessionState::Failed(FailureReason::ConnectionLost)
    );
    for h in handles {
        let _ = h.await;
    }
    assert_eq!(guard.connection_count(), 0);
    assert!(guard.tasks().is_empty());
    assert!(registry.get(id).is_none());
    assert!(
        guard.attach_connection().is_err(),
        "an ended session takes no new connection"
    );

    // A cleanly finished connection leaves the session running.
    let session = registry.create("tee").expect("create");
    session.attach_connection().expect("attach").finish();
    assert!(!session.is_ended());

    // The per-session connection cap.
    let mut cfg = RegistryConfig::new("multi-cap");
    cfg.max_connections_per_session = 2;
    let capped: Registry<()> = Registry::new(cfg);
    let s = capped.create("cap").expect("create");
    let a = s.attach_connection().expect("1");
    let b = s.attach_connection().expect("2");
    assert!(s.attach_connection().is_err());
    a.finish();
    b.finish();
    s.close();
}

#[tokio::test]
async fn closed_queues_report_closed() {
    let registry: Registry<()> = Registry::new(RegistryConfig::new("closed"));
    let session = registry.create("c").expect("create");
    let (tx, mut rx) = mpsc::channel::<u8>(1);
    let outbox = spawn_writer(&session, PollSender::new(tx), 1).expect("writer");
    let handle = session.session().clone();
    session.close();
    // Ending the session stops the writer task, which drops the sink.
    assert_eq!(rx.recv().await, None);
    assert_eq!(outbox.send(1).await, Err(tessera_session::Closed));
    assert_eq!(
        outbox.try_send(1),
        Err(tessera_session::TrySendError::Closed)
    );
    let sink = futures_util::sink::drain::<u8>();
    assert!(
        spawn_writer(&handle, sink, 1).is_err(),
        "no writer on an ended session"
    );
}
