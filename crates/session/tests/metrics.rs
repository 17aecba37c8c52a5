//! The runtime's metrics, read back through a recorder.

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tessera_session::{Registry, RegistryConfig, SessionError};

/// The debugging recorder hands out deltas (each snapshot swaps values to zero), so sum them up.
fn value(
    snapshotter: &Snapshotter,
    totals: &mut HashMap<String, f64>,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    for (key, _, _, v) in snapshotter.snapshot().into_vec() {
        let k = key.key();
        let mut id = k.name().to_string();
        let mut labels: Vec<_> = k
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        id.push_str(&labels.join(","));
        let delta = match v {
            DebugValue::Counter(c) => c as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(h) => h.len() as f64,
        };
        *totals.entry(id).or_default() += delta;
    }
    let mut want: Vec<_> = labels.iter().map(|(n, v)| format!("{n}={v}")).collect();
    want.sort();
    totals
        .get(&format!("{name}{}", want.join(",")))
        .copied()
        .unwrap_or(f64::NAN)
}

#[tokio::test]
async fn sessions_states_pending_rejections_and_timeouts_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let mut config = RegistryConfig::new("m");
    config.max_sessions = 2;
    config.pending.per_session = 1;
    config.pending.deadline = std::time::Duration::from_millis(1);
    let registry: Registry<()> = metrics::with_local_recorder(&recorder, || Registry::new(config));
    let s = ("service", "m");
    let mut t = HashMap::new();
    let mut value = |name: &str, labels: &[(&str, &str)]| value(&snap, &mut t, name, labels);

    let a = registry.create("a").expect("create");
    let b = registry.create("b").expect("create");
    assert!(matches!(
        registry.create("c"),
        Err(SessionError::TooManySessions { .. })
    ));
    a.activate().expect("activate");
    assert_eq!(value("tessera_sessions_live", &[s]), 2.0);
    assert_eq!(value("tessera_sessions", &[s, ("state", "active")]), 1.0);
    assert_eq!(
        value("tessera_sessions", &[s, ("state", "initializing")]),
        1.0
    );
    assert_eq!(value("tessera_sessions_rejected_total", &[s]), 1.0);

    let waiter = a.insert_pending(1, "slow").expect("insert");
    assert!(a.insert_pending(2, "x").is_err());
    assert_eq!(value("tessera_pending_requests", &[s]), 1.0);
    assert_eq!(
        value("tessera_pending_rejected_total", &[s, ("limit", "session")]),
        1.0
    );
    assert!(waiter.wait().await.is_err());
    assert_eq!(value("tessera_pending_timeouts_total", &[s]), 1.0);
    assert_eq!(value("tessera_pending_requests", &[s]), 0.0);

    a.close();
    drop(b);
    assert_eq!(value("tessera_sessions_live", &[s]), 0.0);
    assert_eq!(value("tessera_sessions", &[s, ("state", "active")]), 0.0);
    assert_eq!(
        value("tessera_sessions_ended_total", &[s, ("reason", "closed")]),
        1.0
    );
    assert_eq!(
        value(
            "tessera_sessions_ended_total",
            &[s, ("reason", "abandoned")]
        ),
        1.0
    );
}
