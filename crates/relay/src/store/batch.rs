//! Group commit for the SQLite store: sends and acks from every connection go to one writer task,
//! which runs all those waiting (up to [`MAX_BATCH`]) in **one transaction** and commits once — one fsync for the lot — before it answers any of them.
//!
//! Why: with `synchronous = FULL` a commit costs an fsync, and with one transaction per send the relay
//! did about as many sends per second as the disk does fsyncs, whatever the number of clients. The
//! guarantees stay the same: a caller is answered only after the transaction holding its write has
//! committed; a request refused by the rules (e.g. `NotARecipient`) is refused before it writes anything,
//! and the others commit; a database error, or a failed commit, fails every request of the batch
//! (nothing of it was stored, so every caller may retry).
//! Sends are decided in arrival order, so per-device sequence numbers still follow commit order; the
//! whole batch is two queries ([`super::send`]).
//!
//! The queue is bounded ([`QUEUE`]): when it is full, callers wait (back-pressure to the connections).

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::send::{AckOp, SendOp, run_batch};
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
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(error) => {
            let reason = error.to_string();
            tracing::error!(%reason, "relay store: no connection for a group commit");
            return answer_all(ops.into_iter().map(|op| fail(op, &reason)).collect());
        }
    };
    let mut sends = Vec::new();
    let mut send_replies = Vec::new();
    let mut acks = Vec::new();
    let mut ack_replies = Vec::new();
    for op in ops {
        match op {
            Op::Enqueue { send, reply } => {
                sends.push(send);
                send_replies.push(reply);
            }
            Op::Ack {
                device,
                messages,
                reply,
            } => {
                acks.push(AckOp { device, messages });
                ack_replies.push(reply);
            }
        }
    }
    let done: Vec<Done> = match run_batch(&mut conn, &sends, &acks, limits).await {
        Ok((send_results, ack_counts)) => send_replies
            .into_iter()
            .zip(send_results)
            .map(|(reply, result)| Done::Enqueue(reply, result))
            .chain(
                ack_replies
                    .into_iter()
                    .zip(ack_counts)
                    .map(|(reply, count)| Done::Ack(reply, Ok(count))),
            )
            .collect(),
        Err(error) => {
            // Not committed: roll back whatever is open (an error here only means nothing was).
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            let reason = error.to_string();
            tracing::error!(%reason, "relay store: a group commit failed; nothing of it was stored");
            send_replies
                .into_iter()
                .map(|reply| Done::Enqueue(reply, Err(failed(&reason))))
                .chain(
                    ack_replies
                        .into_iter()
                        .map(|reply| Done::Ack(reply, Err(failed(&reason)))),
                )
                .collect()
        }
    };
    drop(conn);
    answer_all(done);
}

fn fail(op: Op, reason: &str) -> Done {
    match op {
        Op::Enqueue { reply, .. } => Done::Enqueue(reply, Err(failed(reason))),
        Op::Ack { reply, .. } => Done::Ack(reply, Err(failed(reason))),
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
