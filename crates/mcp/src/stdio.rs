//! The stdio proxy: an MCP client on one side (any byte streams — this process's stdin and stdout in the
//! binary), a child server on the other, newline-delimited JSON-RPC between them.
//!
//! Each side has one reader task and one writer. Messages are forwarded as the bytes they came as. A request
//! is recorded before it is forwarded (or refused with a JSON-RPC error to its sender), its response is
//! matched to it, and a request past its deadline gets an error to its sender and `notifications/cancelled`
//! to its receiver. A malformed line from the client gets a `-32700` (or `-32600`) reply and the proxy
//! carries on; one from the server is logged and dropped. The proxy ends when the client closes its input
//! (the child is then shut down: stdin closed, SIGTERM, SIGKILL) or when the child exits.
//!
//! Interception rules ([`crate::rules`]), when given, run over every message both ways before anything else:
//! a blocked request is answered with the rule's error to its sender (the client, or the child for a
//! server request) and goes no further; a blocked notification is dropped.

use std::process::ExitStatus;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::FramedRead;

use crate::error::McpError;
use crate::jsonrpc::{INVALID_REQUEST, Kind, MAX_BATCH, Message};
use crate::lines::{Line, LineCodec};
use crate::metrics;
use crate::outbox::{LineTx, LineWriter};
use crate::rules::Rules;
use crate::session::{Direction, McpSession, Sessions};
use crate::tape::Tape;
use crate::upstream::child::{self, ChildSpec};

/// How a stdio proxy run ended.
#[derive(Debug)]
pub struct StdioExit {
    /// Who ended it.
    pub ended_by: EndedBy,
    /// The child's exit status.
    pub child_status: Option<ExitStatus>,
    /// Frames that passed, both ways.
    pub frames: u64,
}

/// Which side ended a stdio run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The client closed its input.
    Client,
    /// The server exited (or closed its stdout).
    Server,
}

/// What a stdio run records and enforces besides correlation and limits.
#[derive(Debug, Clone, Default)]
pub struct StdioOptions {
    /// Record every frame here.
    pub tape: Option<Tape>,
    /// Interception rules, run over every message both ways.
    pub rules: Option<Arc<Rules>>,
}

/// Runs the proxy between a client (`client_in`, `client_out`) and the child server `spec`, until one side
/// ends. The session is one session of `sessions`.
pub async fn run<I, O>(
    sessions: &Sessions,
    spec: &ChildSpec,
    client_in: I,
    client_out: O,
    tape: Option<Tape>,
) -> Result<StdioExit, McpError>
where
    I: AsyncRead + Send + Unpin + 'static,
    O: AsyncWrite + Send + Unpin + 'static,
{
    let options = StdioOptions { tape, rules: None };
    run_with(sessions, spec, client_in, client_out, options).await
}

/// [`run`] with interception rules (and a tape) in [`StdioOptions`].
pub async fn run_with<I, O>(
    sessions: &Sessions,
    spec: &ChildSpec,
    client_in: I,
    client_out: O,
    options: StdioOptions,
) -> Result<StdioExit, McpError>
where
    I: AsyncRead + Send + Unpin + 'static,
    O: AsyncWrite + Send + Unpin + 'static,
{
    let StdioOptions { tape, rules } = options;
    let (guard, mcp) = sessions.create("mcp-stdio")?;
    let (mut child, to_server, from_server) = child::spawn(spec, guard.session())?;
    let (client_writer, to_client) = LineWriter::spawn(guard.session(), client_out, spec.queue)?;
    if let Some(tape) = &tape {
        tape.session_started(mcp.id(), "stdio");
    }
    let ends = Ends {
        mcp: mcp.clone(),
        to_client,
        to_server,
        tape,
        rules,
    };
    let mut upstream = guard
        .session()
        .spawn(ends.clone().pump(Direction::ServerToClient, from_server))?;
    let from_client = FramedRead::new(client_in, LineCodec::new(spec.max_line));
    let ended_by = tokio::select! {
        _ = ends.clone().pump(Direction::ClientToServer, from_client) => EndedBy::Client,
        _ = &mut upstream => EndedBy::Server,
    };
    let child_status = match ended_by {
        EndedBy::Client => {
            let status = child.shutdown().await.ok();
            // The child is gone: what it wrote before exiting is still read and forwarded.
            let _ = tokio::time::timeout(spec.grace, upstream).await;
            status
        }
        EndedBy::Server => child.wait().await.ok(),
    };
    drop(ends);
    client_writer.finish().await;
    let frames = mcp.frames();
    tracing::debug!(session = %mcp.id(), ?ended_by, ?child_status, frames, "stdio proxy ended");
    guard.close();
    Ok(StdioExit {
        ended_by,
        child_status,
        frames,
    })
}

/// What both directions share.
#[derive(Clone)]
struct Ends {
    mcp: McpSession,
    to_client: LineTx,
    to_server: LineTx,
    tape: Option<Tape>,
    rules: Option<Arc<Rules>>,
}

impl Ends {
    fn toward(&self, direction: Direction) -> &LineTx {
        match direction {
            Direction::ClientToServer => &self.to_server,
            Direction::ServerToClient => &self.to_client,
        }
    }

    fn back(&self, direction: Direction) -> &LineTx {
        self.toward(direction.reverse())
    }

    /// Reads one side's lines until it ends, handling each in order.
    async fn pump<S>(self, direction: Direction, mut lines: S)
    where
        S: Stream<Item = std::io::Result<Line>> + Unpin,
    {
        while let Some(line) = lines.next().await {
            let bytes = match line {
                Ok(Line::Frame(bytes)) => bytes,
                Ok(Line::TooLong) => {
                    metrics::malformed(direction);
                    tracing::warn!(session = %self.mcp.id(), dir = direction.label(), "line over the size limit skipped");
                    if direction == Direction::ClientToServer {
                        self.back(direction)
                            .send(&Message::error_reply(
                                None,
                                INVALID_REQUEST,
                                "message too large",
                            ))
                            .await;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(session = %self.mcp.id(), dir = direction.label(), error = %e, "read failed");
                    return;
                }
            };
            match Message::parse(bytes) {
                Ok(message) => {
                    if !self.forward(direction, message).await {
                        return;
                    }
                }
                Err(e) => {
                    metrics::malformed(direction);
                    tracing::warn!(session = %self.mcp.id(), dir = direction.label(), error = %e, "malformed message");
                    if direction == Direction::ClientToServer {
                        self.back(direction).send(&e.reply()).await;
                    }
                }
            }
        }
    }

    /// Handles one message: rules, correlation, limits, then forwarding. False when the far side is gone.
    async fn forward(&self, direction: Direction, message: Message) -> bool {
        if matches!(message.kind(), Kind::Batch) {
            return self.forward_batch(direction, message).await;
        }
        match self.admit(direction, &message) {
            Admit::Forward => self.toward(direction).send(&message).await,
            Admit::Reply(reply) => self.back(direction).send(&reply).await,
            Admit::Drop => true,
        }
    }

    /// A JSON-RPC batch: each element goes through [`Ends::admit`] as if it came alone (rules, tracking,
    /// correlation, a frame in the tape). What is admitted goes on as one batch — the original bytes when
    /// every element is, else the admitted elements' bytes in a new array; the proxy's own answers
    /// (refusals, blocks, invalid elements) go back to the sender as one array of their own.
    async fn forward_batch(&self, direction: Direction, batch: Message) -> bool {
        let Some(elements) = batch.batch_elements(MAX_BATCH) else {
            metrics::malformed(direction);
            tracing::warn!(session = %self.mcp.id(), dir = direction.label(), "batch over {MAX_BATCH} elements refused");
            if direction == Direction::ClientToServer {
                let error = Message::error_reply(
                    None,
                    INVALID_REQUEST,
                    "Invalid Request: more than 256 messages in a batch",
                );
                return self.back(direction).send(&error).await;
            }
            return true;
        };
        let count = elements.len();
        let mut admitted = Vec::with_capacity(count);
        let mut replies = Vec::new();
        for element in elements {
            match element {
                Ok(message) => match self.admit(direction, &message) {
                    Admit::Forward => admitted.push(message),
                    Admit::Reply(reply) => replies.push(reply),
                    Admit::Drop => {}
                },
                Err(reply) => {
                    metrics::malformed(direction);
                    if direction == Direction::ClientToServer {
                        replies.push(reply);
                    }
                }
            }
        }
        if !replies.is_empty() && !self.back(direction).send(&Message::batch(&replies)).await {
            return false;
        }
        match admitted.len() {
            0 => true,
            n if n == count => self.toward(direction).send(&batch).await,
            _ => {
                self.toward(direction)
                    .send(&Message::batch(&admitted))
                    .await
            }
        }
    }

    /// Rules, correlation and limits for one message, its frame recorded if it goes on.
    fn admit(&self, direction: Direction, message: &Message) -> Admit {
        if let Some(rules) = &self.rules
            && let Some(verdict) = crate::rules::apply(
                rules,
                Some(&self.mcp),
                direction,
                message,
                self.tape.as_ref(),
            )
            && let Some(reply) = crate::rules::blocked_reply(message, &verdict)
        {
            return reply.map_or(Admit::Drop, Admit::Reply);
        }
        let meta = self.mcp.observe(message);
        metrics::frame(direction);
        let mut correlation = None;
        match message.kind() {
            Kind::Request { id, .. } => match self.mcp.track_request(direction, message) {
                Ok(pending) => {
                    let (id, mcp) = (id.clone(), self.mcp.clone());
                    let (sender, receiver) =
                        (self.back(direction).clone(), self.toward(direction).clone());
                    let _ = self.mcp.session().spawn(async move {
                        if let Err(Some(expired)) = McpSession::outcome(pending, &id).await {
                            metrics::expired();
                            tracing::info!(session = %mcp.id(), %id, "request deadline passed");
                            sender.send(&expired.reply).await;
                            receiver.send(&expired.cancel).await;
                        }
                    });
                }
                Err(refusal) => {
                    tracing::warn!(session = %self.mcp.id(), %id, error = %refusal.error, "request refused");
                    return Admit::Reply(refusal.reply);
                }
            },
            Kind::Response { .. } => match self.mcp.correlate_response(direction, message) {
                Some(c) => correlation = Some(c),
                None => {
                    tracing::debug!(session = %self.mcp.id(), id = ?message.id(), "uncorrelated response dropped");
                    return Admit::Drop;
                }
            },
            Kind::Notification { method } if &**method == "notifications/cancelled" => {
                self.mcp.cancelled_by(direction, message);
            }
            Kind::Notification { .. } | Kind::Batch => {}
        }
        if let Some(tape) = &self.tape {
            tape.frame(&meta, direction, message, correlation.as_ref());
        }
        tracing::trace!(session = %meta.session, frame = meta.frame_count, dir = direction.label(), method = ?message.method(), "frame");
        Admit::Forward
    }
}

/// What becomes of one message.
enum Admit {
    /// It goes on to the other side.
    Forward,
    /// It goes no further; this answer goes back to its sender.
    Reply(Message),
    /// It goes no further, unanswered.
    Drop,
}
