//! The proxy's own metrics, beside the runtime's `tessera_sessions_*` and `tessera_pending_*`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tessera_mcp_request_duration_seconds` | histogram | method (known MCP methods, else `other`), outcome (ok, error) |
//! | `tessera_mcp_requests_refused_total` | counter | reason (limit_session, limit_global, duplicate, closed) |
//! | `tessera_mcp_requests_expired_total` | counter | — |
//! | `tessera_mcp_frames_total` | counter | direction (c2s, s2c) |
//! | `tessera_mcp_malformed_total` | counter | direction |
//!
//! Method labels come from a fixed list, so a client cannot grow the label set.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use tessera_session::{LimitScope, SessionError};

use crate::session::Direction;

/// Every method named by the MCP revisions, 2024-11-05 to 2026-07-28.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
    "tasks/result",
    "tasks/list",
];

/// The metric label for a method: itself if MCP defines it, `other` otherwise.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// Handles of the per-message metrics, registered once per [`crate::Sessions`] (the recorder is installed
/// before it is made) instead of once per message: a macro call builds a key — a label vector and a hash —
/// every time. Duration histograms are registered on first use, so `/metrics` shows only series that have
/// values.
#[derive(Clone)]
pub(crate) struct Handles {
    frames: [Counter; 2],
    durations: Arc<[[OnceLock<Histogram>; 2]]>,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handles")
    }
}

impl Handles {
    pub(crate) fn new() -> Self {
        Handles {
            frames: [
                metrics::counter!("tessera_mcp_frames_total", "direction" => "c2s"),
                metrics::counter!("tessera_mcp_frames_total", "direction" => "s2c"),
            ],
            durations: (0..=METHODS.len())
                .map(|_| [OnceLock::new(), OnceLock::new()])
                .collect(),
        }
    }

    /// Counts a frame.
    pub(crate) fn frame(&self, direction: Direction) {
        let i = match direction {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        };
        self.frames[i].increment(1);
    }

    /// Records a request's round trip.
    pub(crate) fn request_finished(&self, method: &str, rtt: Duration, error: bool) {
        let index = METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(METHODS.len());
        let Some(slots) = self.durations.get(index) else {
            return;
        };
        let histogram = slots[usize::from(error)].get_or_init(|| {
            let method = METHODS.get(index).copied().unwrap_or("other");
            let outcome = if error { "error" } else { "ok" };
            metrics::histogram!("tessera_mcp_request_duration_seconds", "method" => method, "outcome" => outcome)
        });
        histogram.record(rtt.as_secs_f64());
    }
}

pub(crate) fn refused(error: &SessionError) {
    let reason = match error {
        SessionError::TooManyRequests {
            scope: LimitScope::Session,
            ..
        } => "limit_session",
        SessionError::TooManyRequests {
            scope: LimitScope::Global,
            ..
        } => "limit_global",
        SessionError::DuplicateRequest(_) => "duplicate",
        _ => "closed",
    };
    metrics::counter!("tessera_mcp_requests_refused_total", "reason" => reason).increment(1);
}

pub(crate) fn expired() {
    metrics::counter!("tessera_mcp_requests_expired_total").increment(1);
}

pub(crate) fn frame(direction: Direction) {
    metrics::counter!("tessera_mcp_frames_total", "direction" => direction.label()).increment(1);
}

pub(crate) fn malformed(direction: Direction) {
    metrics::counter!("tessera_mcp_malformed_total", "direction" => direction.label()).increment(1);
}
