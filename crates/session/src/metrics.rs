//! Metrics through the `metrics` facade, and a helper that serves them in Prometheus text format.
//!
//! Every registry registers its handles once, labelled with the registry's service name, so the hot paths
//! touch an atomic and never look a metric up by name.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tessera_sessions_live` | gauge | service |
//! | `tessera_sessions` | gauge | service, state (initializing, active, shutting_down) |
//! | `tessera_sessions_ended_total` | counter | service, reason (closed, idle_timeout, max_age, …) |
//! | `tessera_sessions_rejected_total` | counter | service |
//! | `tessera_pending_requests` | gauge | service |
//! | `tessera_pending_rejected_total` | counter | service, limit (session, global) |
//! | `tessera_pending_timeouts_total` | counter | service |

use metrics::{Counter, Gauge, counter, gauge};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

use crate::state::SessionState;

const END_LABELS: [&str; 8] = [
    "closed",
    "idle_timeout",
    "max_age",
    "shutdown",
    "panicked",
    "abandoned",
    "connection_lost",
    "error",
];

/// The registry's metric handles.
pub(crate) struct Metrics {
    pub(crate) live: Gauge,
    by_state: [Gauge; 3],
    ended: [Counter; 8],
    pub(crate) rejected: Counter,
    pub(crate) pending: Gauge,
    pub(crate) pending_rejected_session: Counter,
    pub(crate) pending_rejected_global: Counter,
    pub(crate) pending_timeouts: Counter,
}

impl Metrics {
    pub(crate) fn new(service: &'static str) -> Self {
        let s = ("service", service);
        Metrics {
            live: gauge!("tessera_sessions_live", &[s]),
            by_state: [0, 1, 2]
                .map(|i| gauge!("tessera_sessions", &[s, ("state", SessionState::LABELS[i])])),
            ended: END_LABELS
                .map(|r| counter!("tessera_sessions_ended_total", &[s, ("reason", r)])),
            rejected: counter!("tessera_sessions_rejected_total", &[s]),
            pending: gauge!("tessera_pending_requests", &[s]),
            pending_rejected_session: counter!(
                "tessera_pending_rejected_total",
                &[s, ("limit", "session")]
            ),
            pending_rejected_global: counter!(
                "tessera_pending_rejected_total",
                &[s, ("limit", "global")]
            ),
            pending_timeouts: counter!("tessera_pending_timeouts_total", &[s]),
        }
    }

    /// Moves one session from one state's gauge to another's; terminal states count as ended instead.
    pub(crate) fn moved(&self, from: Option<&SessionState>, to: &SessionState) {
        if let Some(from) = from
            && let Some(g) = self.by_state.get(from.index())
        {
            g.decrement(1.0);
        }
        if let Some(g) = self.by_state.get(to.index()) {
            g.increment(1.0);
        }
        let end = match to {
            SessionState::Closed => Some("closed"),
            SessionState::Failed(reason) => Some(reason.label()),
            _ => None,
        };
        if let Some(label) = end
            && let Some(i) = END_LABELS.iter().position(|l| *l == label)
        {
            self.ended[i].increment(1);
        }
    }
}

/// Installs a Prometheus recorder as the process's `metrics` recorder and returns the handle that renders
/// it. Call once, at the binary's edge, before creating registries.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new().install_recorder()
}

/// An axum router serving `GET /metrics` (Prometheus text format) and `GET /health`.
pub fn metrics_router(handle: PrometheusHandle) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        handle.render(),
                    )
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }))
}
