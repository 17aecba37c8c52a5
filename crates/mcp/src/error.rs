//! The error vocabulary of the proxy.

use tessera_session::SessionError;

/// Errors of the proxy. Each says what went wrong in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// No server command was given after `--`.
    #[error("no server command given: put it after `--`")]
    NoCommand,
    /// The server command could not be started.
    #[error("cannot start the server command {0:?}: {1}")]
    Spawn(String, #[source] std::io::Error),
    /// The session runtime refused (too many sessions, shutting down).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// An I/O error on the client side or with the child.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(String, #[source] std::io::Error),
    /// The upstream URL is not usable.
    #[error("bad upstream URL {0:?}: {1}")]
    BadUpstream(String, &'static str),
    /// A recording could not be written or read.
    #[error("tape {0}: {1}")]
    Tape(String, String),
    /// A rule file is not valid.
    #[error("rules: {0}")]
    Rules(String),
}
