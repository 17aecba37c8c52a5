//! Per-connection serial processing and the one writer of a connection.
//!
//! * [`spawn_writer`] starts the only task that writes to a connection's sink; everything else sends
//!   through a cloneable [`Outbox`] with a bounded queue. Two writers can never interleave on one socket.
//! * [`spawn_processor`] starts the task that handles a connection's (or a logical session's) inbound
//!   messages one at a time, in arrival order, through a [`Handler`] that owns the per-connection state.
//!   Messages enter through a bounded [`Inbox`]; [`pipe`] feeds a stream into one.
//!
//! Both tasks belong to the session (its tracker and token): when the session ends they stop. A failed
//! write fails the session with [`FailureReason::ConnectionLost`]; a handler error fails it with the error.

use std::fmt;
use std::future::Future;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;

use crate::error::SessionError;
use crate::session::Session;
use crate::state::FailureReason;

/// The connection is gone (the session ended or the connection's task stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection is closed")]
pub struct Closed;

/// Why [`Outbox::try_send`] or [`Inbox::try_send`] did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError {
    /// The queue is full: the peer or the handler is slower than the sender.
    #[error("the queue is full")]
    Full,
    /// The connection is gone.
    #[error("the connection is closed")]
    Closed,
}

impl<T> From<mpsc::error::TrySendError<T>> for TrySendError {
    fn from(e: mpsc::error::TrySendError<T>) -> Self {
        match e {
            mpsc::error::TrySendError::Full(_) => TrySendError::Full,
            mpsc::error::TrySendError::Closed(_) => TrySendError::Closed,
        }
    }
}

/// The sending side of a connection's single writer. Clone it into every task that writes.
pub struct Outbox<M> {
    tx: mpsc::Sender<M>,
}

impl<M> Clone for Outbox<M> {
    fn clone(&self) -> Self {
        Outbox {
            tx: self.tx.clone(),
        }
    }
}

impl<M> fmt::Debug for Outbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .finish()
    }
}

impl<M: Send + 'static> Outbox<M> {
    /// Queues a message for the writer, waiting while the queue is full.
    pub async fn send(&self, message: M) -> Result<(), Closed> {
        self.tx.send(message).await.map_err(|_| Closed)
    }

    /// Queues a message without waiting.
    pub fn try_send(&self, message: M) -> Result<(), TrySendError> {
        self.tx.try_send(message).map_err(Into::into)
    }

    /// True once the writer has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Starts the one writer task of a connection. It writes queued messages to `sink` in order; when every
/// [`Outbox`] is dropped it closes the sink (flushing it); if a write fails the session fails with
/// [`FailureReason::ConnectionLost`].
pub fn spawn_writer<R, M, S>(
    session: &Session<R>,
    mut sink: S,
    capacity: usize,
) -> Result<Outbox<M>, SessionError>
where
    R: Send + 'static,
    M: Send + 'static,
    S: Sink<M> + Send + Unpin + 'static,
    S::Error: fmt::Display,
{
    let (tx, mut rx) = mpsc::channel::<M>(capacity.max(1));
    let owner = session.clone();
    session.spawn(async move {
        while let Some(message) = rx.recv().await {
            if let Err(e) = sink.send(message).await {
                tracing::debug!(session = %owner.id(), error = %e, "write failed");
                owner.fail(FailureReason::ConnectionLost);
                return;
            }
        }
        let _ = sink.close().await;
    })?;
    Ok(Outbox { tx })
}

/// Handles a connection's inbound messages, one at a time. Holding `&mut self` across the await is what makes
/// the processing serial: the next message is not taken until this one is done.
pub trait Handler<M>: Send + 'static {
    /// The handler's error; returning one fails the session with its message.
    type Error: fmt::Display + Send;

    /// Handles one message.
    fn handle(&mut self, message: M) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The sending side of a serial processor.
pub struct Inbox<M> {
    tx: mpsc::Sender<M>,
}

impl<M> Clone for Inbox<M> {
    fn clone(&self) -> Self {
        Inbox {
            tx: self.tx.clone(),
        }
    }
}

impl<M> fmt::Debug for Inbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .finish()
    }
}

impl<M: Send + 'static> Inbox<M> {
    /// Queues a message for processing, waiting while the queue is full (back-pressure).
    pub async fn send(&self, message: M) -> Result<(), Closed> {
        self.tx.send(message).await.map_err(|_| Closed)
    }

    /// Queues a message without waiting.
    pub fn try_send(&self, message: M) -> Result<(), TrySendError> {
        self.tx.try_send(message).map_err(Into::into)
    }

    /// True once the processor has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Starts the serial processor of a connection or logical session. Messages sent to the returned [`Inbox`]
/// are handled one at a time in the order they were queued. The processor stops when every `Inbox` is
/// dropped, when the session ends, or when the handler returns an error (failing the session).
pub fn spawn_processor<R, M, H>(
    session: &Session<R>,
    capacity: usize,
    mut handler: H,
) -> Result<Inbox<M>, SessionError>
where
    R: Send + 'static,
    M: Send + 'static,
    H: Handler<M>,
{
    let (tx, mut rx) = mpsc::channel::<M>(capacity.max(1));
    let owner = session.clone();
    session.spawn(async move {
        while let Some(message) = rx.recv().await {
            owner.touch();
            if let Err(e) = handler.handle(message).await {
                tracing::debug!(session = %owner.id(), error = %e, "handler failed");
                owner.fail(FailureReason::error(e));
                return;
            }
        }
    })?;
    Ok(Inbox { tx })
}

/// Feeds a stream (e.g. a socket's read half) into an inbox, in order, with back-pressure: when the inbox is
/// full the stream is not read. Returns when the stream ends or the processor stops.
pub async fn pipe<M, St>(mut stream: St, inbox: &Inbox<M>) -> Result<(), Closed>
where
    M: Send + 'static,
    St: Stream<Item = M> + Unpin,
{
    while let Some(message) = stream.next().await {
        inbox.send(message).await?;
    }
    Ok(())
}
