//! # tessera-session
//!
//! The session runtime every Tessera service stands on. It exists so that the bugs of the systems Tessera
//! replaces cannot be written on top of it:
//!
//! | bug in the seeds | what makes it impossible here |
//! |---|---|
//! | a second client overwrote global state | all state lives in a [`Session`], found by an unguessable [`SessionId`] |
//! | sessions and pending requests leaked on failure | a [`SessionGuard`] ends the session on every exit path; ending drains its pending table |
//! | a timer raced completion | a pending request is resolved by whoever removes it from the table, once |
//! | two state enums drifted apart | one [`SessionState`], changed only by [`Session::transition`] |
//! | maps grew without bound | caps on sessions, pending requests (per session and global), connections and queues |
//! | two writers hit one socket | [`spawn_writer`]: one writer task per connection |
//!
//! A session belongs to a [`Registry`] (one per service). It owns a cancellation token and a task tracker;
//! [`Session::spawn`] ties every task to both. Several connections can join one session
//! ([`Session::attach_connection`]) and the session ends as one.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tessera_session::SessionError> {
//! use tessera_session::{Registry, RegistryConfig};
//! let registry: Registry<String> = Registry::new(RegistryConfig::new("example"));
//! let session = registry.create("demo")?;
//! session.activate()?;
//! let waiter = session.insert_pending(1, "tools/call")?;
//! session.respond(&1.into(), "result".to_string())?;
//! assert_eq!(waiter.wait().await.unwrap(), "result");
//! session.close();
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connection;
mod error;
mod id;
pub mod metrics;
mod pending;
mod registry;
mod secret;
mod session;
pub mod shutdown;
mod state;

pub use connection::{
    Closed, Handler, Inbox, Outbox, TrySendError, pipe, spawn_processor, spawn_writer,
};
pub use error::{LimitScope, PendingError, SessionEnd, SessionError};
pub use id::{ParseSessionIdError, SessionId};
pub use pending::{Pending, PendingLimits, PendingTicket, RequestId, RequestInfo, Taken};
pub use registry::{Registry, RegistryConfig, ShutdownReport, SweepReport};
pub use secret::{Secret, SecretBytes, scrub, wipe, wipe_vec};
pub use session::{ConnectionGuard, Session, SessionGuard};
pub use state::{FailureReason, IllegalTransition, SessionState};

pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
