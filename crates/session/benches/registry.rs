//! Registry and pending-table costs beside the floor: a bare `Mutex<HashMap>` doing the same inserts and
//! removes in the same run. Run: `cargo bench -p tessera-session --bench registry`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tessera_session::{Registry, RegistryConfig, RequestId, SessionId};

fn config() -> RegistryConfig {
    let mut config = RegistryConfig::new("bench");
    config.max_sessions = 1_000_000;
    config.pending.per_session = 1_000_000;
    config.pending.global = 1_000_000;
    config.sweep_interval = Duration::from_secs(3600);
    config
}

/// Runs `op` `iters` times on each of `threads` threads at once and returns the wall time of the slowest.
fn contended(threads: usize, iters: u64, op: impl Fn(usize, u64) + Sync) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                let op = &op;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        op(t, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .max()
            .unwrap_or_default()
    })
}

fn sessions(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = rt.enter();
    let registry: Registry<()> = Registry::new(config());
    let bare: Arc<Mutex<HashMap<SessionId, Arc<u64>>>> = Arc::default();

    let mut g = c.benchmark_group("session create+remove");
    g.bench_function("registry/1 thread", |b| {
        b.iter(|| {
            let guard = registry.create("bench").expect("create");
            guard.close();
        })
    });
    g.bench_function("bare Mutex<HashMap>/1 thread", |b| {
        b.iter(|| {
            let id = SessionId::random();
            bare.lock().expect("lock").insert(id, Arc::new(0));
            black_box(bare.lock().expect("lock").remove(&id));
        })
    });
    g.bench_function("registry/2 threads", |b| {
        b.iter_custom(|iters| {
            contended(2, iters, |_, _| {
                let guard = registry.create("bench").expect("create");
                guard.close();
            })
        })
    });
    g.bench_function("bare Mutex<HashMap>/2 threads", |b| {
        b.iter_custom(|iters| {
            contended(2, iters, |_, _| {
                let id = SessionId::random();
                bare.lock().expect("lock").insert(id, Arc::new(0));
                black_box(bare.lock().expect("lock").remove(&id));
            })
        })
    });
    g.finish();
}

type BarePending = Mutex<HashMap<(SessionId, RequestId), (&'static str, Instant)>>;

fn pending(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _enter = rt.enter();
    let registry: Registry<u64> = Registry::new(config());
    let sessions: Vec<_> = (0..2)
        .map(|_| registry.create("bench").expect("create"))
        .collect();
    let bare: Arc<BarePending> = Arc::default();
    let ids: Vec<SessionId> = sessions.iter().map(|s| s.id()).collect();

    let mut g = c.benchmark_group("pending insert+take");
    g.bench_function("session table/1 thread", |b| {
        let mut n = 0i64;
        b.iter(|| {
            n += 1;
            let waiter = sessions[0].insert_pending(n, "tools/call").expect("insert");
            black_box(sessions[0].respond(&RequestId::Num(n), 7).expect("respond"));
            drop(waiter);
        })
    });
    g.bench_function("bare Mutex<HashMap>/1 thread", |b| {
        let mut n = 0i64;
        b.iter(|| {
            n += 1;
            let key = (ids[0], RequestId::Num(n));
            bare.lock()
                .expect("lock")
                .insert(key.clone(), ("tools/call", Instant::now()));
            black_box(bare.lock().expect("lock").remove(&key));
        })
    });
    g.bench_function("session table/2 threads", |b| {
        b.iter_custom(|iters| {
            contended(2, iters, |t, i| {
                let s = &sessions[t];
                let waiter = s.insert_pending(i as i64, "tools/call").expect("insert");
                black_box(s.respond(&RequestId::Num(i as i64), 7).expect("respond"));
                drop(waiter);
            })
        })
    });
    g.bench_function("bare Mutex<HashMap>/2 threads", |b| {
        b.iter_custom(|iters| {
            contended(2, iters, |t, i| {
                let key = (ids[t], RequestId::Num(i as i64));
                bare.lock()
                    .expect("lock")
                    .insert(key.clone(), ("tools/call", Instant::now()));
                black_box(bare.lock().expect("lock").remove(&key));
            })
        })
    });
    g.finish();
}

criterion_group!(benches, sessions, pending);
criterion_main!(benches);
