//! The one lifecycle state machine of a session.
//!
//! A session has exactly one state, changed only through [`SessionState::transition`], which rejects every
//! transition not in the table below. Anything that looks like a "status" (open or not, the metric label, the
//! reason a session ended) is derived from the state, never stored beside it — the seed's `SessionStatus` and
//! `SessionState` drifted apart because there were two.
//!
//! ```text
//!   Initializing ──► Active ──► ShuttingDown ──► Closed
//!        │             │             │
//!        └─────────────┴─────────────┴─────────► Failed(reason)
//!   (Initializing and Active may also go straight to Closed)
//! ```

use std::fmt;
use std::sync::Arc;

/// Why a session failed. `Closed` is the one normal ending; every other ending is a failure with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// No activity for longer than the idle timeout.
    IdleTimeout,
    /// The session lived longer than its maximum age.
    MaxAge,
    /// The process is shutting down and the grace period ran out.
    Shutdown,
    /// The session's task panicked.
    Panicked,
    /// The session's handle was dropped without being closed: an error path or a cancelled task.
    Abandoned,
    /// One of the session's connections was lost; the session ends as one.
    ConnectionLost,
    /// An application error, with its message.
    Error(Arc<str>),
}

impl FailureReason {
    /// An application error with a message.
    pub fn error(message: impl fmt::Display) -> Self {
        FailureReason::Error(message.to_string().into())
    }

    /// A short stable label, used for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FailureReason::IdleTimeout => "idle_timeout",
            FailureReason::MaxAge => "max_age",
            FailureReason::Shutdown => "shutdown",
            FailureReason::Panicked => "panicked",
            FailureReason::Abandoned => "abandoned",
            FailureReason::ConnectionLost => "connection_lost",
            FailureReason::Error(_) => "error",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::IdleTimeout => f.write_str("idle timeout"),
            FailureReason::MaxAge => f.write_str("maximum session age reached"),
            FailureReason::Shutdown => f.write_str("server shutting down"),
            FailureReason::Panicked => f.write_str("session task panicked"),
            FailureReason::Abandoned => f.write_str("session abandoned without close"),
            FailureReason::ConnectionLost => f.write_str("a connection of the session was lost"),
            FailureReason::Error(message) => write!(f, "error: {message}"),
        }
    }
}

/// The lifecycle state of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Created, not yet ready for traffic (e.g. a handshake is running).
    Initializing,
    /// Serving traffic.
    Active,
    /// Asked to finish: no new work is accepted, in-flight work may complete.
    ShuttingDown,
    /// Ended normally.
    Closed,
    /// Ended abnormally.
    Failed(FailureReason),
}

/// A transition that the lifecycle table does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal session state transition {from} -> {to}")]
pub struct IllegalTransition {
    /// The state the session was in.
    pub from: SessionState,
    /// The state that was asked for.
    pub to: SessionState,
}

impl SessionState {
    /// The single transition function: returns the new state, or an error naming both ends if the lifecycle
    /// table does not allow the step. Terminal states have no way out, and no state transitions to itself.
    pub fn transition(&self, to: SessionState) -> Result<SessionState, IllegalTransition> {
        use SessionState::*;
        let allowed = matches!(
            (self, &to),
            (Initializing, Active | ShuttingDown | Closed | Failed(_))
                | (Active, ShuttingDown | Closed | Failed(_))
                | (ShuttingDown, Closed | Failed(_))
        );
        if allowed {
            Ok(to)
        } else {
            Err(IllegalTransition {
                from: self.clone(),
                to,
            })
        }
    }

    /// True once the session has ended (Closed or Failed): no transition leaves these.
    pub fn is_terminal(&self) -> bool {
        matches!(self, SessionState::Closed | SessionState::Failed(_))
    }

    /// True while the session may take new work (Initializing or Active).
    pub fn accepts_work(&self) -> bool {
        matches!(self, SessionState::Initializing | SessionState::Active)
    }

    /// A short stable label, used for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            SessionState::Initializing => "initializing",
            SessionState::Active => "active",
            SessionState::ShuttingDown => "shutting_down",
            SessionState::Closed => "closed",
            SessionState::Failed(_) => "failed",
        }
    }

    /// The index of this state among [`SessionState::LABELS`].
    pub(crate) fn index(&self) -> usize {
        match self {
            SessionState::Initializing => 0,
            SessionState::Active => 1,
            SessionState::ShuttingDown => 2,
            SessionState::Closed => 3,
            SessionState::Failed(_) => 4,
        }
    }

    /// Every state label, in `SessionState::index` order.
    pub const LABELS: [&'static str; 5] = [
        "initializing",
        "active",
        "shutting_down",
        "closed",
        "failed",
    ];
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionState::Failed(reason) => write!(f, "failed ({reason})"),
            other => f.write_str(other.label()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SessionState::*;
    use super::*;

    fn all() -> Vec<SessionState> {
        vec![
            Initializing,
            Active,
            ShuttingDown,
            Closed,
            Failed(FailureReason::IdleTimeout),
        ]
    }

    #[test]
    fn transition_table_is_exact() {
        let legal: &[(usize, usize)] = &[
            (0, 1),
            (0, 2),
            (0, 3),
            (0, 4),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 3),
            (2, 4),
        ];
        for (i, from) in all().iter().enumerate() {
            for (j, to) in all().into_iter().enumerate() {
                let result = from.transition(to.clone());
                if legal.contains(&(i, j)) {
                    assert_eq!(result, Ok(to), "{from} -> should be legal");
                } else {
                    let err = result.expect_err("must be rejected");
                    assert_eq!((err.from, err.to), (from.clone(), to));
                }
            }
        }
    }

    #[test]
    fn derived_views_agree_with_state() {
        for s in all() {
            assert_eq!(s.is_terminal(), matches!(s, Closed | Failed(_)));
            assert_eq!(s.accepts_work(), matches!(s, Initializing | Active));
            assert_eq!(SessionState::LABELS[s.index()], s.label());
        }
    }
}
