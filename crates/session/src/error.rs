//! The error vocabulary of the session runtime.

use crate::state::{FailureReason, IllegalTransition, SessionState};

/// Which limit a rejected request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// The per-session limit on pending requests.
    Session,
    /// The process-wide limit on pending requests.
    Global,
}

impl std::fmt::Display for LimitScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitScope::Session => "per-session",
            LimitScope::Global => "global",
        })
    }
}

/// Errors of the session runtime. Each says what went wrong in terms a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The registry holds its maximum number of live sessions.
    #[error("too many sessions: the limit of {limit} live sessions is reached")]
    TooManySessions {
        /// The configured cap.
        limit: usize,
    },
    /// The registry is shutting down and accepts no new sessions.
    #[error("the registry is shutting down and accepts no new sessions")]
    RegistryShuttingDown,
    /// A pending-request limit was reached.
    #[error("too many pending requests: the {scope} limit of {limit} is reached")]
    TooManyRequests {
        /// Which limit.
        scope: LimitScope,
        /// Its configured value.
        limit: usize,
    },
    /// A request with this id is already pending in the session.
    #[error("a request with id {0} is already pending in this session")]
    DuplicateRequest(String),
    /// No request with this id is pending (never sent, already answered, or timed out).
    #[error("no pending request with id {0}")]
    NotPending(String),
    /// The session has ended (or is ending) and takes no new work.
    #[error("the session is {0} and takes no new work")]
    NotAccepting(SessionState),
    /// The session has too many connections attached.
    #[error("too many connections for one session (limit {limit})")]
    TooManyConnections {
        /// The configured cap.
        limit: usize,
    },
    /// A lifecycle transition the state machine does not allow.
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
}

/// How a pending request ended when it did not get its response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PendingError {
    /// Its deadline passed before a response arrived.
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Its session ended first.
    #[error("session ended before the response: {0}")]
    SessionEnded(SessionEnd),
    /// The response was taken but the taker dropped it without resolving the request.
    #[error("the response was taken but never delivered")]
    Abandoned,
}

/// How a session ended: closed normally, or failed with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// Ended normally.
    Closed,
    /// Ended abnormally.
    Failed(FailureReason),
}

impl SessionEnd {
    /// A short stable label, used for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SessionEnd::Closed => "closed",
            SessionEnd::Failed(reason) => reason.label(),
        }
    }
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::Closed => f.write_str("closed"),
            SessionEnd::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}
