//! The stdio proxy: an MCP client on one side (any byte streams — this process's stdin and stdout in the
//! binary), a child server on the other, newline-delimited JSON-RPC between them.
//!
//! Each side has one reader task and one writer. Messages are forwarded as the bytes they came as. A request
//! is recorded before it is forwarded (or refused with a JSON-RPC error to its sender), its response is
//! matched to it, and a request past its deadline gets an error to its sender and `notifications/cancelled`
//! to its receiver. A malformed line from the client gets a `-32700` (or `-32600`) reply and the proxy
//! carries on; one from the server is logged and dropped. The proxy ends when the client closes its input
//! (the child is then shut down: stdin closed, SIGTERM, SIGKILL) or when the child exits.

use std::process::ExitStatus;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::FramedRead;

use crate::error::McpError;
use crate::jsonrpc::{INVALID_REQUEST, Kind, Message};
use crate::lines::{Line, LineCodec};
use crate::metrics;
use crate::outbox::{LineTx, LineWriter};
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

    /// Handles one message: correlation, limits, then forwarding. False when the far side is gone.
    async fn forward(&self, direction: Direction, message: Message) -> bool {
        let meta = self.mcp.observe(&message);
        metrics::frame(direction);
        let mut correlation = None;
        match message.kind() {
            Kind::Request { id, .. } => match self.mcp.track_request(direction, &message) {
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
                    return self.back(direction).send(&refusal.reply).await;
                }
            },
            Kind::Response { .. } => match self.mcp.correlate_response(direction, &message) {
                Some(c) => correlation = Some(c),
                None => {
                    tracing::debug!(session = %self.mcp.id(), id = ?message.id(), "uncorrelated response dropped");
                    return true;
                }
            },
            Kind::Notification { method } if &**method == "notifications/cancelled" => {
                self.mcp.cancelled_by(direction, &message);
            }
            Kind::Notification { .. } | Kind::Batch => {}
        }
        if let Some(tape) = &self.tape {
            tape.frame(&meta, direction, &message, correlation.as_ref());
        }
        tracing::trace!(session = %meta.session, frame = meta.frame_count, dir = direction.label(), method = ?message.method(), "frame");
        self.toward(direction).send(&message).await
    }
}
