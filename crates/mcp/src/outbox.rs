//! The one writer of a newline-framed byte sink (a child's stdin, this process's stdout).
//!
//! Every task that writes holds a cloneable [`LineTx`]; one task of the session owns the sink. Unlike a
//! writer that stops when the session does, this one can be [`LineWriter::finish`]ed: it writes what is
//! already queued, flushes, closes the sink and reports — so the last reply reaches the peer before exit.
//!
//! [`LineSink`] is the same discipline without a task of its own: a task that forwards a stream (the stdio
//! proxy's pump for one direction) owns the sink and writes its traffic straight through, and takes what
//! others queue on its [`LineTx`] between lines — no hand-off and no wake-up per forwarded message.

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;

use crate::jsonrpc::Message;
use crate::lines::LineCodec;
use tessera_session::{Session, SessionError};

/// The sending side: queue a message for the writer.
#[derive(Debug, Clone)]
pub struct LineTx {
    tx: mpsc::Sender<Bytes>,
}

impl LineTx {
    /// Queues a message, waiting while the queue is full. False once the writer has stopped.
    pub async fn send(&self, message: &Message) -> bool {
        self.tx.send(message.line_safe()).await.is_ok()
    }

    /// Queues a message without waiting (from a destructor); false if the queue is full or closed.
    pub fn try_send(&self, message: &Message) -> bool {
        self.tx.try_send(message.line_safe()).is_ok()
    }
}

/// A sink owned by the task that forwards into it, with a queue for what other tasks send ([`LineTx`]).
#[derive(Debug)]
pub struct LineSink<W> {
    sink: FramedWrite<W, LineCodec>,
    queued: mpsc::Receiver<Bytes>,
    open: bool,
}

impl<W: AsyncWrite + Unpin> LineSink<W> {
    /// A sink and the sender others use to queue lines for it (at most `queue` waiting).
    pub fn new(sink: W, queue: usize) -> (LineSink<W>, LineTx) {
        let (tx, rx) = mpsc::channel::<Bytes>(queue.max(1));
        (
            LineSink {
                sink: FramedWrite::new(sink, LineCodec::new(usize::MAX)),
                queued: rx,
                open: true,
            },
            LineTx { tx },
        )
    }

    /// Writes and flushes one line; false once the sink is closed or broken.
    pub async fn write(&mut self, line: Bytes) -> bool {
        if let Err(e) = self.sink.send(line).await {
            tracing::debug!(error = %e, "line sink closed");
            return false;
        }
        true
    }

    /// The next line another task queued; pending while there is none (forever once no sender is left).
    pub async fn queued(&mut self) -> Bytes {
        if self.open
            && let Some(line) = self.queued.recv().await
        {
            return line;
        }
        self.open = false;
        std::future::pending().await
    }

    /// Writes what is queued, flushes and closes the sink.
    pub async fn finish(mut self) {
        self.queued.close();
        while let Ok(line) = self.queued.try_recv() {
            if self.sink.feed(line).await.is_err() {
                return;
            }
        }
        let _ = self.sink.close().await;
    }
}

/// The writer task's handle.
#[derive(Debug)]
pub struct LineWriter {
    finish: CancellationToken,
    join: JoinHandle<Option<()>>,
}

impl LineWriter {
    /// Starts the writer as a task of `session`, with a queue of `queue` messages.
    pub fn spawn<R, W>(
        session: &Session<R>,
        sink: W,
        queue: usize,
    ) -> Result<(LineWriter, LineTx), SessionError>
    where
        R: Send + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Bytes>(queue.max(1));
        let finish = CancellationToken::new();
        let stop = finish.clone();
        let join = session.spawn(async move {
            let mut sink = FramedWrite::new(sink, LineCodec::new(usize::MAX));
            loop {
                let next = tokio::select! {
                    biased;
                    next = rx.recv() => next,
                    _ = stop.cancelled() => break,
                };
                let Some(line) = next else { break };
                if let Err(e) = sink.send(line).await {
                    tracing::debug!(error = %e, "line sink closed");
                    return;
                }
            }
            // Finishing: write what is already queued, then close.
            while let Ok(line) = rx.try_recv() {
                if sink.feed(line).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        })?;
        Ok((LineWriter { finish, join }, LineTx { tx }))
    }

    /// Writes what is queued, flushes and closes the sink; completes when done (or the session ended).
    pub async fn finish(self) {
        self.finish.cancel();
        let _ = self.join.await;
    }
}
