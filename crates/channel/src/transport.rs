//! After the handshake: every frame is a Noise transport message.
//!
//! Two tasks per connection, both spawned on the connection's session ([`Session::spawn`]):
//!
//! * the **writer task** is the only writer of the socket. It owns the send nonce and the session guard;
//!   [`ChannelWriter::send`] queues plaintext (bounded), the task fragments, encrypts, writes and flushes in
//!   batches, sends pings, and sends the close frame. When it ends, the session ends. A message's buffer is
//!   zeroized once encrypted when the writer holds its only handle ([`tessera_session::scrub`]), and so
//!   is whatever is still queued when the channel ends: a received message's buffer is the receiver's to
//!   scrub.
//! * the **reader task** (`transport/reader.rs`) is the only reader. It owns the receive nonce, decrypts, reassembles fragments up
//!   to [`ChannelConfig::max_message_size`] and queues messages (bounded) for the [`ChannelReader`]. An
//!   undecryptable, oversized or unexpected frame makes it ask the writer to close with the matching code.
//!
//! Each holds its direction's key ([`crate::cipher::TransportKey`]) and counter, so neither waits for the
//! other; both encrypt and decrypt in place (a fragment is copied once into its frame, and once out of
//! the WebSocket's buffer).

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tessera_session::{
    FailureReason, Registry, Session, SessionGuard, SessionId, SessionState, scrub, wipe,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cipher::TransportKey;
use crate::config::ChannelConfig;
use crate::error::{ChannelError, close_code};
use crate::frame::{self, MAX_FRAGMENT};
use crate::handshake::{self, Established, HandshakeInfo};
use crate::identity::PublicKey;
use crate::ws::{WsMsg, WsSink, WsStream};

mod reader;
use reader::Reader;

/// Frames written between two flushes, at most.
const BATCH: usize = 64;

/// Why a channel ended, recorded once by whoever saw it first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    /// We close with this code (1000 for a normal local close).
    Local { code: u16, reason: String },
    /// The peer sent a close frame.
    Peer { code: u16, reason: String },
    /// The connection broke.
    Lost(String),
}

impl Cause {
    fn to_error(&self) -> Option<ChannelError> {
        match self {
            Cause::Local { code, .. } | Cause::Peer { code, .. } if *code == close_code::NORMAL => {
                None
            }
            Cause::Local { code, reason } => Some(ChannelError::Aborted {
                code: *code,
                reason: reason.clone(),
            }),
            Cause::Peer { code, reason } => Some(ChannelError::PeerClosed {
                code: *code,
                reason: reason.clone(),
            }),
            Cause::Lost(text) => Some(ChannelError::WebSocket(text.clone())),
        }
    }
}

/// What the halves and the tasks share.
struct Shared {
    info: HandshakeInfo,
    session: Session,
    cause: Mutex<Option<Cause>>,
    closing: CancellationToken,
    max_message_size: usize,
    close_timeout: std::time::Duration,
    /// Keeps the session's registry alive as long as the channel (a registry's last handle ending
    /// would end its sessions).
    _registry: Registry,
}

impl Shared {
    /// Records the cause (the first one wins) and wakes the writer.
    fn end(&self, cause: Cause) {
        let mut slot = self.cause.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(cause);
        }
        drop(slot);
        self.closing.cancel();
    }

    fn cause(&self) -> Option<Cause> {
        self.cause.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The error to report once the channel is over: its cause, or why its session ended.
    fn ended_error(&self) -> Option<ChannelError> {
        match self.cause() {
            Some(cause) => cause.to_error(),
            None => match self.session.state() {
                SessionState::Failed(reason) => {
                    Some(ChannelError::SessionEnded(reason.to_string()))
                }
                _ => None,
            },
        }
    }
}

/// An established channel: the peer's proven identity, and a reader and a writer.
#[derive(Debug)]
pub struct Channel {
    reader: ChannelReader,
    writer: ChannelWriter,
}

/// The receiving half of a [`Channel`].
pub struct ChannelReader {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Bytes>,
    /// Keeps the writer task running while this half lives.
    _keep: mpsc::Sender<Bytes>,
}

/// The sending half of a [`Channel`]. Clones share the one writer task.
#[derive(Clone)]
pub struct ChannelWriter {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Bytes>,
}

impl Channel {
    /// The handshake's results (peer, channel binding, session id, expiry, peer payload).
    pub fn info(&self) -> &HandshakeInfo {
        &self.writer.shared.info
    }

    /// The peer's identity, proven by the handshake.
    pub fn peer(&self) -> PublicKey {
        self.info().peer
    }

    /// The channel-binding value (the Noise handshake hash), equal on both ends.
    pub fn channel_binding(&self) -> &[u8; 32] {
        &self.info().channel_binding
    }

    /// The local session this connection is.
    pub fn session(&self) -> &Session {
        &self.writer.shared.session
    }

    /// The server's session id (from session_established); on the server, this connection's session id.
    pub fn session_id(&self) -> SessionId {
        SessionId::from_bytes(self.info().session_id)
    }

    /// Sends one message (see [`ChannelWriter::send`]).
    pub async fn send(&self, message: impl Into<Bytes>) -> Result<(), ChannelError> {
        self.writer.send(message).await
    }

    /// Receives one message (see [`ChannelReader::recv`]).
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ChannelError> {
        self.reader.recv().await
    }

    /// Closes the channel normally (close code 1000) after the queued messages, and waits until its
    /// session has ended. A peer that does not take the remaining bytes within twice
    /// [`ChannelConfig::close_timeout`] has its session failed instead.
    pub async fn close(self) {
        let session = self.writer.shared.session.clone();
        let limit = self.writer.shared.close_timeout * 2;
        self.writer.close();
        drop(self);
        if tokio::time::timeout(limit, session.ended()).await.is_err() {
            session.fail(FailureReason::error("close timed out"));
        }
    }

    /// Ends the channel with a close code of our choice (e.g. 1013 when it cannot be served).
    pub(crate) fn abort(self, code: u16, reason: &str) {
        self.writer.shared.end(Cause::Local {
            code,
            reason: reason.to_owned(),
        });
    }

    /// Splits into halves usable from different tasks. The channel stays open while either half lives.
    pub fn split(self) -> (ChannelReader, ChannelWriter) {
        (self.reader, self.writer)
    }
}

impl ChannelWriter {
    /// Queues one message for the writer task, waiting while the queue is full. Messages above
    /// [`ChannelConfig::max_message_size`] are refused (the channel stays open). Once encrypted, the
    /// message's buffer is zeroized if the writer holds its only handle (keep no clone of a secret).
    pub async fn send(&self, message: impl Into<Bytes>) -> Result<(), ChannelError> {
        let message = message.into();
        if message.len() > self.shared.max_message_size {
            return Err(ChannelError::TooLarge {
                size: message.len(),
                limit: self.shared.max_message_size,
            });
        }
        if self.shared.closing.is_cancelled() {
            return Err(self.shared.ended_error().unwrap_or(ChannelError::Closed));
        }
        self.tx
            .send(message)
            .await
            .map_err(|_| self.shared.ended_error().unwrap_or(ChannelError::Closed))
    }

    /// Asks the writer task to close the channel normally (close code 1000) after the queued messages.
    pub fn close(&self) {
        self.shared.end(Cause::Local {
            code: close_code::NORMAL,
            reason: String::new(),
        });
    }

    /// The peer's identity.
    pub fn peer(&self) -> PublicKey {
        self.shared.info.peer
    }
}

impl ChannelReader {
    /// The next message. `Ok(None)` once the channel closed normally; an error if it ended otherwise
    /// (the peer's close code, a protocol error we closed for, a lost connection, the session's end).
    /// The message's buffer is the caller's: pass it to [`tessera_session::scrub`] when it carried secrets.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ChannelError> {
        match self.rx.recv().await {
            Some(message) => Ok(Some(message)),
            None => match self.shared.ended_error() {
                Some(e) => Err(e),
                None => Ok(None),
            },
        }
    }

    /// The peer's identity.
    pub fn peer(&self) -> PublicKey {
        self.shared.info.peer
    }
}

impl std::fmt::Debug for ChannelReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelReader")
            .field("peer", &self.shared.info.peer)
            .finish()
    }
}

impl std::fmt::Debug for ChannelWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelWriter")
            .field("peer", &self.shared.info.peer)
            .finish()
    }
}

/// Turns a finished handshake into a channel: activates the session (if the driver has not) and spawns
/// its two tasks.
pub(crate) fn start(
    registry: &Registry,
    guard: SessionGuard,
    sink: WsSink,
    stream: WsStream,
    established: Established,
    config: &ChannelConfig,
) -> Result<Channel, ChannelError> {
    let Established {
        send,
        recv,
        send_nonce,
        recv_nonce,
        info,
    } = established;
    let session = guard.session().clone();
    if session.state() != SessionState::Active {
        session.activate().map_err(|_| match session.state() {
            SessionState::Failed(reason) => ChannelError::SessionEnded(reason.to_string()),
            _ => ChannelError::Closed,
        })?;
    }
    let shared = Arc::new(Shared {
        info,
        session: session.clone(),
        cause: Mutex::new(None),
        closing: CancellationToken::new(),
        max_message_size: config.max_message_size,
        close_timeout: config.close_timeout,
        _registry: registry.clone(),
    });
    let (tx, out_rx) = mpsc::channel::<Bytes>(config.send_queue.max(1));
    let (in_tx, rx) = mpsc::channel::<Bytes>(config.recv_queue.max(1));
    let reader = Reader {
        shared: shared.clone(),
        key: recv,
        nonce: recv_nonce,
        max_messages: config.max_messages,
        partial: BytesMut::new(),
        expected: 0,
    };
    session.spawn(reader.run(stream, in_tx))?;
    let writer = Writer {
        shared: shared.clone(),
        key: send,
        nonce: send_nonce,
        max_messages: config.max_messages,
    };
    session.spawn(writer.run(guard, sink, out_rx, config.keepalive, config.close_timeout))?;
    Ok(Channel {
        reader: ChannelReader {
            shared: shared.clone(),
            rx,
            _keep: tx.clone(),
        },
        writer: ChannelWriter { shared, tx },
    })
}

struct Writer {
    shared: Arc<Shared>,
    key: TransportKey,
    nonce: u64,
    max_messages: u64,
}

impl Writer {
    async fn run(
        mut self,
        guard: SessionGuard,
        mut sink: WsSink,
        mut rx: mpsc::Receiver<Bytes>,
        keepalive: Option<std::time::Duration>,
        close_timeout: std::time::Duration,
    ) {
        let session = guard.session().clone();
        let shutdown = session.shutdown_requested();
        tokio::pin!(shutdown);
        let closing = self.shared.closing.clone();
        let mut pings = keepalive.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let ping = async |pings: &mut Option<tokio::time::Interval>| match pings {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        };
        loop {
            tokio::select! {
                biased;
                _ = closing.cancelled() => break,
                _ = &mut shutdown => {
                    self.shared.end(Cause::Local {
                        code: close_code::GOING_AWAY,
                        reason: "server shutting down".into(),
                    });
                    break;
                }
                message = rx.recv() => {
                    let Some(message) = message else {
                        // Both halves dropped: a normal close.
                        self.shared.end(Cause::Local { code: close_code::NORMAL, reason: String::new() });
                        break;
                    };
                    // Boxed: an idle channel should not carry the write path's state (memory per idle
                    // connection); a write costs one allocation.
                    if let Err(cause) = Box::pin(self.write_batch(&mut sink, message, &mut rx)).await {
                        self.shared.end(cause);
                        break;
                    }
                    session.touch();
                }
                _ = ping(&mut pings) => {
                    if let Err(e) = Box::pin(sink.send(WsMsg::Ping(Bytes::new()))).await {
                        self.shared.end(Cause::Lost(format!("{e:?}")));
                        break;
                    }
                }
            }
        }
        // Boxed, like the writes: only a closing channel needs the close path's state.
        Box::pin(self.finish(guard, sink, rx, close_timeout)).await;
    }

    /// Sends what the close needs (the queued messages after a normal local close, then the close frame),
    /// then ends the session with the matching outcome.
    async fn finish(
        &mut self,
        guard: SessionGuard,
        mut sink: WsSink,
        mut rx: mpsc::Receiver<Bytes>,
        close_timeout: std::time::Duration,
    ) {
        // A normal local close still delivers what was queued before it.
        let cause = self.shared.cause();
        // A sink that returned an error must not be polled again (its error mapper panics if it is).
        let mut sink_failed = false;
        if let Some(Cause::Local { code, .. }) = &cause
            && *code == close_code::NORMAL
        {
            let mut result = Ok(());
            while let (Ok(()), Ok(message)) = (&result, rx.try_recv()) {
                result = self.write_message(&mut sink, &message).await;
                scrub(message);
            }
            sink_failed = result.is_err() || sink.flush().await.is_err();
        }
        // Send what the close needs, then end the session with the matching outcome.
        match &cause {
            _ if sink_failed => {}
            Some(Cause::Local { code, reason }) => {
                crate::ws::close(&mut sink, *code, reason.clone(), close_timeout).await;
            }
            Some(Cause::Peer { .. }) => {
                // The WebSocket layer queued its close reply; flush it.
                let _ = tokio::time::timeout(close_timeout, sink.close()).await;
            }
            Some(Cause::Lost(_)) | None => {}
        }
        // What will never be sent is scrubbed too.
        rx.close();
        while let Ok(message) = rx.try_recv() {
            scrub(message);
        }
        match cause {
            Some(Cause::Local { code, .. } | Cause::Peer { code, .. })
                if code == close_code::NORMAL =>
            {
                guard.close()
            }
            Some(Cause::Local { code, reason } | Cause::Peer { code, reason }) => {
                guard.fail(FailureReason::error(format!("closed {code}: {reason}")))
            }
            Some(Cause::Lost(_)) | None => guard.fail(FailureReason::ConnectionLost),
        }
    }

    /// Writes `first` and whatever else is queued (up to [`BATCH`] messages), then flushes once.
    async fn write_batch(
        &mut self,
        sink: &mut WsSink,
        first: Bytes,
        rx: &mut mpsc::Receiver<Bytes>,
    ) -> Result<(), Cause> {
        let written = self.write_message(sink, &first).await;
        scrub(first);
        written?;
        for _ in 1..BATCH {
            match rx.try_recv() {
                Ok(message) => {
                    let written = self.write_message(sink, &message).await;
                    scrub(message);
                    written?;
                }
                Err(_) => break,
            }
        }
        sink.flush()
            .await
            .map_err(|e| Cause::Lost(format!("{e:?}")))
    }

    /// Fragments, encrypts and feeds one application message.
    async fn write_message(&mut self, sink: &mut WsSink, message: &[u8]) -> Result<(), Cause> {
        let mut chunks = message.chunks(MAX_FRAGMENT).peekable();
        if message.is_empty() {
            return self.write_fragment(sink, frame::TYPE_DATA, &[]).await;
        }
        while let Some(chunk) = chunks.next() {
            let ty = if chunks.peek().is_some() {
                frame::TYPE_DATA_MORE
            } else {
                frame::TYPE_DATA
            };
            self.write_fragment(sink, ty, chunk).await?;
        }
        Ok(())
    }

    async fn write_fragment(
        &mut self,
        sink: &mut WsSink,
        ty: u8,
        body: &[u8],
    ) -> Result<(), Cause> {
        if self.nonce >= self.max_messages {
            return Err(local(&ChannelError::NonceExhausted));
        }
        // The frame is built around the plaintext and encrypted where it lies: no plaintext copy is left.
        let mut frame = Vec::with_capacity(2 + body.len() + frame::TAG_LEN);
        frame.push(frame::FrameKind::Transport as u8);
        frame.push(ty);
        frame.extend_from_slice(body);
        if let Err(e) = handshake::seal_frame(&self.key, self.nonce, &mut frame) {
            wipe(&mut frame);
            return Err(local(&e));
        }
        self.nonce += 1;
        sink.feed(WsMsg::Binary(frame.into()))
            .await
            .map_err(|e| Cause::Lost(format!("{e:?}")))
    }
}

fn local(error: &ChannelError) -> Cause {
    Cause::Local {
        code: error.close_code(),
        reason: error.close_reason(),
    }
}
