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

use std::collections::HashMap;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{Stream, StreamExt};
use tessera_session::CancellationToken;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::FramedRead;

use crate::deadlines::Deadlines;
use crate::error::McpError;
use crate::jsonrpc::{INVALID_REQUEST, Id, Kind, MAX_BATCH, Message};
use crate::lines::{Line, LineCodec};
use crate::metrics;
use crate::outbox::{LineSink, LineTx};
use crate::rules::RuleSet;
use crate::session::{Direction, Expired, McpSession, Sessions};
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
    /// The proxy was told to stop ([`StdioOptions::stop`]: SIGTERM or SIGINT): the child was shut down
    /// as for a client that left (its stdin closed, SIGTERM, SIGKILL after the grace period).
    Stopped,
}

/// What a stdio run records and enforces besides correlation and limits.
#[derive(Debug, Clone, Default)]
pub struct StdioOptions {
    /// Record every frame here.
    pub tape: Option<Tape>,
    /// Interception rules, run over every message both ways.
    pub rules: RuleSet,
    /// Cancelled to stop the proxy (the binary cancels it on SIGTERM/SIGINT), which then shuts the child
    /// down as the spec says instead of leaving it running.
    pub stop: Option<CancellationToken>,
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
    let options = StdioOptions {
        tape,
        ..StdioOptions::default()
    };
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
    let StdioOptions { tape, rules, stop } = options;
    let stop = stop.unwrap_or_default();
    let (guard, mcp) = sessions.create("mcp-stdio")?;
    let (mut child, child_stdin, from_server) = child::spawn_raw(spec)?;
    // Each direction's pump owns the sink it forwards into and writes straight through; what the other
    // direction or the deadline task sends it is queued on its `LineTx`.
    let (server_sink, to_server) = LineSink::new(child_stdin, spec.queue);
    let (client_sink, to_client) = LineSink::new(client_out, spec.queue);
    if let Some(tape) = &tape {
        tape.session_started(mcp.id(), "stdio");
    }
    let ends = Ends {
        mcp: mcp.clone(),
        to_client,
        to_server,
        tape,
        rules,
        batches: Arc::default(),
        deadlines: Arc::default(),
    };
    let expiry = ends.clone();
    guard.session().spawn(async move {
        let deadlines = expiry.deadlines.clone();
        deadlines
            .run(|sender, id, expired| {
                let ends = expiry.clone();
                async move { ends.expired(sender, id, expired).await }
            })
            .await;
    })?;
    let mut upstream = guard.session().spawn(ends.clone().pump(
        Direction::ServerToClient,
        from_server,
        client_sink,
    ))?;
    let from_client = FramedRead::new(client_in, LineCodec::new(spec.max_line));
    let ended_by = tokio::select! {
        _ = ends.clone().pump(Direction::ClientToServer, from_client, server_sink) => EndedBy::Client,
        _ = &mut upstream => EndedBy::Server,
        () = stop.cancelled() => EndedBy::Stopped,
    };
    let child_status = match ended_by {
        EndedBy::Client | EndedBy::Stopped => {
            // The pump closed the child's stdin (or, stopped, dropped it with the pump's sink); the rest of
            // the spec's shutdown follows.
            let status = child.shutdown().await.ok();
            // The child is gone: what it wrote before exiting is still read and forwarded, and the client's
            // sink finished (queued lines written, stdout closed).
            let _ = tokio::time::timeout(spec.grace, upstream).await;
            status
        }
        EndedBy::Server => child.wait().await.ok(),
    };
    drop(ends);
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
    rules: RuleSet,
    batches: Arc<Mutex<Batches>>,
    deadlines: Arc<Deadlines>,
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

    /// Reads one side's lines until it ends, handling each in order and writing what goes on straight into
    /// `out` (the other side's sink, which this task owns); between lines, writes what other tasks queued
    /// for `out`. At the end, finishes `out`: queued lines written, the sink closed (for the child: its
    /// stdin, the first step of its shutdown).
    async fn pump<S, W>(self, direction: Direction, mut lines: S, mut out: LineSink<W>)
    where
        S: Stream<Item = std::io::Result<Line>> + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            let line = tokio::select! {
                biased;
                queued = out.queued() => {
                    if !out.write(queued).await {
                        return;
                    }
                    continue;
                }
                line = lines.next() => line,
            };
            let Some(line) = line else { break };
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
                    break;
                }
            };
            match Message::parse(bytes) {
                Ok(message) => {
                    if !self.forward(direction, message, &mut out).await {
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
        out.finish().await;
    }

    /// Handles one message: rules, correlation, limits, then forwarding. False when the far side is gone.
    async fn forward<W: AsyncWrite + Unpin>(
        &self,
        direction: Direction,
        message: Message,
        out: &mut LineSink<W>,
    ) -> bool {
        if matches!(message.kind(), Kind::Batch) {
            return self.forward_batch(direction, message, out).await;
        }
        match self.admit(direction, &message) {
            Admit::Forward => out.write(message.line_safe()).await,
            Admit::Send(instead) => out.write(instead.line_safe()).await,
            Admit::Reply(reply) => self.back(direction).send(&reply).await,
            Admit::Drop => true,
        }
    }

    /// A JSON-RPC batch, split as over HTTP: each element goes through [`Ends::admit`] as if it came alone
    /// (rules, tracking, correlation, its own frame in the tape) and on as a line of its own, since most
    /// servers no longer take batches (2025-06-18 removed them). The answers — the receiver's responses and
    /// the proxy's own (refusals, blocks, invalid elements, deadlines) — go back to the sender together, as
    /// one array, once every request of the batch is answered. A batch without requests gets no answer, or
    /// an array of the proxy's errors.
    async fn forward_batch<W: AsyncWrite + Unpin>(
        &self,
        direction: Direction,
        batch: Message,
        out: &mut LineSink<W>,
    ) -> bool {
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
        let mut admitted = Vec::with_capacity(elements.len());
        let mut answers = Vec::new();
        for element in elements {
            match element {
                Ok(message) => match self.admit(direction, &message) {
                    Admit::Forward => admitted.push(message),
                    Admit::Reply(reply) => answers.push(reply),
                    Admit::Send(_) | Admit::Drop => {}
                },
                Err(reply) => {
                    metrics::malformed(direction);
                    if direction == Direction::ClientToServer {
                        answers.push(reply);
                    }
                }
            }
        }
        let waiting: Vec<Id> = admitted
            .iter()
            .filter(|m| m.is_request())
            .filter_map(|m| m.id().cloned())
            .collect();
        if waiting.is_empty() {
            if !answers.is_empty() && !self.back(direction).send(&Message::batch(&answers)).await {
                return false;
            }
        } else {
            // Registered before the first element goes, so no answer can come before it.
            self.batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .open(direction, waiting, answers);
        }
        for message in admitted {
            if !out.write(message.line_safe()).await {
                return false;
            }
        }
        true
    }

    /// A request of `sender` past its deadline: its sender gets the error (in its batch's answers, if it
    /// was in a batch), its receiver `notifications/cancelled`.
    async fn expired(&self, sender: Direction, id: Id, expired: Expired) {
        metrics::expired();
        tracing::info!(session = %self.mcp.id(), %id, "request deadline passed");
        let answer = self
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .answer(sender, &id, &expired.reply);
        match answer {
            None => {
                self.back(sender).send(&expired.reply).await;
            }
            Some(Some(answers)) => {
                self.back(sender).send(&answers).await;
            }
            Some(None) => {}
        }
        self.toward(sender).send(&expired.cancel).await;
    }

    /// A response to a request of a batch that `sender` sent: `None` if it is not one; else held with the
    /// batch's answers, and `Some(array)` once it was the last.
    fn batch_answer(&self, sender: Direction, response: &Message) -> Option<Option<Message>> {
        let id = response.id()?;
        self.batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .answer(sender, id, response)
    }

    /// Rules, correlation and limits for one message, its frame recorded if it goes on.
    fn admit(&self, direction: Direction, message: &Message) -> Admit {
        if let Some(rules) = self.rules.current()
            && let Some(verdict) = crate::rules::apply(
                &rules,
                Some(&self.mcp),
                direction,
                message,
                self.tape.as_ref(),
            )
            && let Some(reply) = crate::rules::blocked_reply(message, &verdict)
        {
            return reply.map_or(Admit::Drop, Admit::Reply);
        }
        // The frame's metadata is built only for the tape.
        let meta = match &self.tape {
            Some(_) => {
                self.mcp.metrics().frame(direction);
                Some(self.mcp.observe(message))
            }
            None => {
                self.mcp.count(message, direction);
                None
            }
        };
        let mut correlation = None;
        match message.kind() {
            Kind::Request { id, .. } => match self.mcp.track_request(direction, message) {
                Ok(pending) => {
                    self.deadlines
                        .watch(direction, id.clone(), pending, self.mcp.deadline());
                }
                Err(refusal) => {
                    tracing::warn!(session = %self.mcp.id(), %id, error = %refusal.error, "request refused");
                    return Admit::Reply(refusal.reply);
                }
            },
            Kind::Response { .. } => match self.mcp.correlate_response(direction, message) {
                Some(c) => {
                    correlation = Some(c);
                    if let Some(id) = message.id() {
                        self.deadlines.settled(direction.reverse(), id);
                    }
                    if let Some(held) = self.batch_answer(direction.reverse(), message) {
                        if let (Some(tape), Some(meta)) = (&self.tape, &meta) {
                            tape.frame(meta, direction, message, correlation.as_ref());
                        }
                        return held.map_or(Admit::Drop, Admit::Send);
                    }
                }
                None => {
                    tracing::debug!(session = %self.mcp.id(), id = ?message.id(), "uncorrelated response dropped");
                    return Admit::Drop;
                }
            },
            Kind::Notification { method } if &**method == "notifications/cancelled" => {
                if let Some(id) = self.mcp.cancelled_by(direction, message) {
                    self.deadlines.settled(direction, &id);
                    // A withdrawn batch member is answered by nobody: the batch stops waiting for it.
                    let done = self
                        .batches
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .forget(direction, &id);
                    if let Some(answers) = done {
                        let back = self.back(direction).clone();
                        let _ = self.mcp.session().spawn(async move {
                            back.send(&answers).await;
                        });
                    }
                }
            }
            Kind::Notification { .. } | Kind::Batch => {}
        }
        if let (Some(tape), Some(meta)) = (&self.tape, &meta) {
            tape.frame(meta, direction, message, correlation.as_ref());
        }
        tracing::trace!(session = %self.mcp.id(), dir = direction.label(), method = ?message.method(), "frame");
        Admit::Forward
    }
}

/// What becomes of one message.
enum Admit {
    /// It goes on to the other side.
    Forward,
    /// It goes no further, but this goes on in its place (a batch's answers, complete).
    Send(Message),
    /// It goes no further; this answer goes back to its sender.
    Reply(Message),
    /// It goes no further, unanswered.
    Drop,
}

/// Batches whose requests are not all answered yet, each keyed by its requests' (sender, id). Bounded by the
/// pending limits: every waiting id is a pending request of the session.
#[derive(Default)]
struct Batches {
    next: u64,
    member: HashMap<(Direction, Id), u64>,
    open: HashMap<u64, OpenBatch>,
}

struct OpenBatch {
    left: usize,
    answers: Vec<Message>,
}

impl Batches {
    fn open(&mut self, sender: Direction, waiting: Vec<Id>, answers: Vec<Message>) {
        let batch = self.next;
        self.next += 1;
        let mut left = 0;
        for id in waiting {
            // Ids pending at once are distinct (the session refuses a duplicate), so this inserts.
            if self.member.insert((sender, id), batch).is_none() {
                left += 1;
            }
        }
        self.open.insert(batch, OpenBatch { left, answers });
    }

    /// Adds the answer to request `id` of `sender`; `None` if it is in no batch, `Some(Some(array))` when
    /// it completes its batch.
    fn answer(&mut self, sender: Direction, id: &Id, answer: &Message) -> Option<Option<Message>> {
        let batch = self.member.remove(&(sender, id.clone()))?;
        let open = self.open.get_mut(&batch)?;
        open.answers.push(answer.clone());
        Some(self.settle(batch))
    }

    /// Request `id` of `sender` was withdrawn: its batch stops waiting for it.
    fn forget(&mut self, sender: Direction, id: &Id) -> Option<Message> {
        let batch = self.member.remove(&(sender, id.clone()))?;
        self.settle(batch)
    }

    fn settle(&mut self, batch: u64) -> Option<Message> {
        let open = self.open.get_mut(&batch)?;
        open.left = open.left.saturating_sub(1);
        if open.left > 0 {
            return None;
        }
        let open = self.open.remove(&batch)?;
        (!open.answers.is_empty()).then(|| Message::batch(&open.answers))
    }
}
