//! Group commit for the SQLite store: sends and acks from every connection go to one writer task,
//! which runs all those waiting (up to [`MAX_BATCH`]) in **one transaction** and commits once — one fsync for the lot — before it answers any of them.
//!
//! Why: with `synchronous = FULL` a commit costs an fsync, and with one transaction per send the relay
//! did about as many sends per second as the disk does fsyncs, whatever the number of clients. The
//! guarantees stay the same: a caller is answered only after the transaction holding its write has
//! committed; a request refused by the rules (e.g. `NotARecipient`) is refused before it writes anything,
//! and the others commit; a database error, or a failed commit, fails every request of the batch
//! (nothing of it was stored, so every caller may retry).
//! Requests run in arrival order, so per-device sequence numbers still follow commit order. Consecutive
//! sends run together ([`super::send::enqueue_run`]: a fixed number of statements per run, not per send);
//! an ack ends a run, so each request still sees the effect of those before it.
//!
//! The queue is bounded ([`QUEUE`]): when it is full, callers wait (back-pressure to the connections).

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::send::{SendOp, ack_in, enqueue_run};
use super::{Enqueued, StoreError, StoreLimits};
use crate::protocol::{Envelope, MessageRef};

/// Most requests in one transaction.
pub const MAX_BATCH: usize = 256;
/// Most requests waiting for the writer.
pub const QUEUE: usize = 4096;

enum Op {
    Enqueue {
        send: SendOp,
        reply: oneshot::Sender<Result<Enqueued, StoreError>>,
    },
    Ack {
        device: String,
        messages: Vec<MessageRef>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

enum Done {
    Enqueue(
        oneshot::Sender<Result<Enqueued, StoreError>>,
        Result<Enqueued, StoreError>,
    ),
    Ack(
        oneshot::Sender<Result<u64, StoreError>>,
        Result<u64, StoreError>,
    ),
}

/// The handle to the group-commit writer; cheap to clone. The writer task ends when the last handle
/// is dropped.
#[derive(Debug, Clone)]
pub(super) struct Batcher {
    queue: mpsc::Sender<Op>,
}

fn gone() -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(
        "the store's writer has stopped".into(),
    ))
}

fn failed(reason: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(format!(
        "the batch's transaction failed: {reason}"
    )))
}

impl Batcher {
    /// Starts the writer task over `pool` (the one-connection writer pool).
    pub(super) fn spawn(pool: SqlitePool, limits: StoreLimits) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, receiver, limits));
        Batcher { queue }
    }

    pub(super) async fn enqueue(
        &self,
        sender: &str,
        message_id: &str,
        to: &str,
        envelopes: Vec<Envelope>,
    ) -> Result<Enqueued, StoreError> {
        let (reply, answer) = oneshot::channel();
        let op = Op::Enqueue {
            send: SendOp {
                sender: sender.to_owned(),
                message_id: message_id.to_owned(),
                to: to.to_owned(),
                envelopes,
            },
            reply,
        };
        self.queue.send(op).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    pub(super) async fn ack(
        &self,
        device: &str,
        messages: Vec<MessageRef>,
    ) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        let op = Op::Ack {
            device: device.to_owned(),
            messages,
            reply,
        };
        self.queue.send(op).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(pool: SqlitePool, mut receiver: mpsc::Receiver<Op>, limits: StoreLimits) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut ops, MAX_BATCH).await > 0 {
        execute(&pool, std::mem::take(&mut ops), &limits).await;
    }
}

async fn execute(pool: &SqlitePool, ops: Vec<Op>, limits: &StoreLimits) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(error) => {
            let reason = error.to_string();
            tracing::error!(%reason, "relay store: cannot begin a transaction");
            return answer_all(ops.into_iter().map(|op| fail(op, &reason)).collect());
        }
    };
    let mut done = Vec::with_capacity(ops.len());
    // A database error may leave part of a request written: then nothing of the batch commits.
    let mut broken: Option<String> = None;
    let mut run: Vec<SendOp> = Vec::new();
    let mut replies = Vec::new();
    let mut ops = ops.into_iter().peekable();
    while let Some(op) = ops.next() {
        if let Some(reason) = &broken {
            done.push(fail(op, reason));
            continue;
        }
        match op {
            Op::Enqueue { send, reply } => {
                run.push(send);
                replies.push(reply);
                if matches!(ops.peek(), Some(Op::Enqueue { .. })) {
                    continue;
                }
                match enqueue_run(&mut tx, &run, limits).await {
                    Ok(results) => done.extend(
                        replies
                            .drain(..)
                            .zip(results)
                            .map(|(reply, result)| Done::Enqueue(reply, result)),
                    ),
                    Err(error) => {
                        let reason = error.to_string();
                        done.extend(
                            replies
                                .drain(..)
                                .map(|reply| Done::Enqueue(reply, Err(failed(&reason)))),
                        );
                        broken = Some(reason);
                    }
                }
                run.clear();
            }
            Op::Ack {
                device,
                messages,
                reply,
            } => {
                let finished = Done::Ack(reply, ack_in(&mut tx, &device, &messages).await);
                if let Some(reason) = database_error(&finished) {
                    broken = Some(reason);
                }
                done.push(finished);
            }
        }
    }
    let outcome = match broken {
        Some(reason) => {
            let _ = tx.rollback().await;
            Err(reason)
        }
        None => tx.commit().await.map_err(|e| e.to_string()),
    };
    if let Err(reason) = outcome {
        tracing::error!(%reason, "relay store: a group commit failed; nothing of it was stored");
        done = done.into_iter().map(|d| fail_done(d, &reason)).collect();
    }
    answer_all(done);
}

fn database_error(done: &Done) -> Option<String> {
    match done {
        Done::Enqueue(_, Err(StoreError::Database(e)))
        | Done::Ack(_, Err(StoreError::Database(e))) => Some(e.to_string()),
        _ => None,
    }
}

fn fail(op: Op, reason: &str) -> Done {
    match op {
        Op::Enqueue { reply, .. } => Done::Enqueue(reply, Err(failed(reason))),
        Op::Ack { reply, .. } => Done::Ack(reply, Err(failed(reason))),
    }
}

fn fail_done(done: Done, reason: &str) -> Done {
    match done {
        Done::Enqueue(reply, _) => Done::Enqueue(reply, Err(failed(reason))),
        Done::Ack(reply, _) => Done::Ack(reply, Err(failed(reason))),
    }
}

fn answer_all(done: Vec<Done>) {
    for d in done {
        // A caller that went away (its connection closed) no longer needs the answer.
        match d {
            Done::Enqueue(reply, result) => {
                let _ = reply.send(result);
            }
            Done::Ack(reply, result) => {
                let _ = reply.send(result);
            }
        }
    }
}
