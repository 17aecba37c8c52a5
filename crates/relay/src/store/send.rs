//! The writes of `send` and `ack` (SQLite), run by the group-commit writer ([`super::batch`]) inside
//! its transaction.
//!
//! Sends are written **per run**, not per send: a run of consecutive sends in a batch costs two queries
//! whatever its length (each a single hand-off to sqlx's SQLite worker thread) — one read of every
//! device involved (owner, queue length, sequence counter) together with the idempotency records, and
//! one multi-statement write with a multi-row insert or update per table. The rules are decided in
//! memory, send by send in arrival order, against that state (so a send sees the queue lengths and
//! sequence numbers the sends before it in the run left), and sequence numbers are assigned in memory
//! from each device's counter: the writer is the only one that writes them, and it read them inside
//! the same transaction.

use std::collections::{HashMap, HashSet};

use sqlx::{Row, SqliteConnection};

use super::sqlite::{now, to_u64};
use super::{Enqueued, StoreError, StoreLimits};
use crate::protocol::{Envelope, MessageRef};

/// One send waiting for the writer.
pub(super) struct SendOp {
    pub(super) sender: String,
    pub(super) message_id: String,
    pub(super) to: String,
    pub(super) envelopes: Vec<Envelope>,
}

/// Rows per multi-row write statement (SQLite allows 32,766 bound values per statement; 7 columns ×
/// 500 stays well under).
const CHUNK: usize = 500;

struct DeviceState {
    user: String,
    queued: u64,
    next_seq: i64,
    touched: bool,
}

struct MessageRow<'a> {
    recipient: &'a str,
    seq: i64,
    sender: &'a str,
    sender_user: String,
    message_id: &'a str,
    ciphertext: &'a str,
}

fn placeholders(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// Bound values per read statement (SQLite allows 32,766).
const READ_VALUES: usize = 8_000;

/// Reads, in one statement per chunk of sends (usually one), every device the sends involve (owner,
/// queue length, sequence counter) and which of their `(sender, message id)` pairs were sent before.
async fn load_state(
    conn: &mut SqliteConnection,
    ops: &[SendOp],
) -> Result<(HashMap<String, DeviceState>, HashSet<(String, String)>), sqlx::Error> {
    let mut devices = HashMap::new();
    let mut sent = HashSet::new();
    let mut asked = HashSet::new();
    let mut rest = ops;
    while !rest.is_empty() {
        // Take sends until the chunk's bound values would pass the limit (at least one send).
        let mut take = 0;
        let mut values = 0;
        while take < rest.len() {
            let more = 3 + rest[take].envelopes.len();
            if take > 0 && values + more > READ_VALUES {
                break;
            }
            values += more;
            take += 1;
        }
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        let mut wanted: Vec<&str> = Vec::new();
        for op in chunk {
            let named = std::iter::once(&op.sender).chain(op.envelopes.iter().map(|e| &e.device));
            for device in named {
                if asked.insert(device.as_str()) {
                    wanted.push(device);
                }
            }
        }
        let mut sql = String::from(
            "SELECT 's' AS kind, sender_device AS a, message_id AS b, 0 AS queued, 0 AS next_seq \
             FROM sent_messages WHERE (sender_device, message_id) IN (VALUES ",
        );
        sql.push_str(&placeholders(chunk.len(), 2));
        sql.push(')');
        if !wanted.is_empty() {
            sql.push_str(
                " UNION ALL SELECT 'd', device_id, username, queued, next_seq FROM devices \
                 WHERE device_id IN (",
            );
            sql.push_str(&vec!["?"; wanted.len()].join(", "));
            sql.push(')');
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for op in chunk {
            query = query.bind(&op.sender).bind(&op.message_id);
        }
        for device in wanted {
            query = query.bind(device);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let kind: String = row.try_get("kind")?;
            let (a, b): (String, String) = (row.try_get("a")?, row.try_get("b")?);
            if kind == "d" {
                let state = DeviceState {
                    user: b,
                    queued: to_u64(row.try_get("queued")?),
                    next_seq: row.try_get("next_seq")?,
                    touched: false,
                };
                devices.insert(a, state);
            } else {
                sent.insert((a, b));
            }
        }
    }
    Ok((devices, sent))
}

/// Decides one send against the run's state and, when it is stored, records its rows.
fn decide<'a>(
    op: &'a SendOp,
    devices: &mut HashMap<String, DeviceState>,
    sent: &mut HashSet<(String, String)>,
    limits: &StoreLimits,
    stored_at: i64,
    rows: &mut Rows<'a>,
) -> Result<Enqueued, StoreError> {
    let Some(sender_user) = devices.get(&op.sender).map(|d| d.user.clone()) else {
        return Err(StoreError::UnknownDevice {
            device: op.sender.clone(),
        });
    };
    let mut to_exists = op.to == sender_user;
    let mut once = HashSet::with_capacity(op.envelopes.len());
    for envelope in &op.envelopes {
        if !once.insert(envelope.device.as_str()) {
            return Err(StoreError::RepeatedDevice {
                device: envelope.device.clone(),
            });
        }
        let Some(state) = devices.get(&envelope.device) else {
            return Err(StoreError::NotARecipient {
                device: envelope.device.clone(),
                username: op.to.clone(),
            });
        };
        if state.user == op.to {
            to_exists = true;
        } else if state.user != sender_user {
            return Err(StoreError::NotARecipient {
                device: envelope.device.clone(),
                username: op.to.clone(),
            });
        }
        if state.queued >= limits.max_queued_per_device {
            return Err(StoreError::QueueFull {
                device: envelope.device.clone(),
                limit: limits.max_queued_per_device,
            });
        }
    }
    if !sent.insert((op.sender.clone(), op.message_id.clone())) {
        return Ok(Enqueued::Duplicate);
    }
    rows.sent.push(op);
    if op.to != sender_user {
        if to_exists {
            rows.contacts.insert((sender_user.clone(), op.to.clone()));
            rows.contacts.insert((op.to.clone(), sender_user.clone()));
        } else {
            // Copies to the sender's own devices only: `to` may not even exist.
            rows.maybe_contacts
                .push((sender_user.clone(), op.to.clone()));
        }
    }
    let mut copies = Vec::with_capacity(op.envelopes.len());
    for envelope in &op.envelopes {
        let Some(state) = devices.get_mut(&envelope.device) else {
            continue; // checked above
        };
        state.next_seq += 1;
        state.queued += 1;
        state.touched = true;
        rows.messages.push(MessageRow {
            recipient: &envelope.device,
            seq: state.next_seq,
            sender: &op.sender,
            sender_user: sender_user.clone(),
            message_id: &op.message_id,
            ciphertext: &envelope.ciphertext,
        });
        copies.push((envelope.device.clone(), to_u64(state.next_seq)));
    }
    Ok(Enqueued::Stored {
        copies,
        from_user: sender_user,
        stored_at,
    })
}

#[derive(Default)]
struct Rows<'a> {
    sent: Vec<&'a SendOp>,
    contacts: HashSet<(String, String)>,
    maybe_contacts: Vec<(String, String)>,
    messages: Vec<MessageRow<'a>>,
}

/// A run of sends inside the caller's transaction (one of a group commit): one result per send, in
/// order. Every refusal (`UnknownDevice`, `NotARecipient`, `RepeatedDevice`, `QueueFull`) and a
/// duplicate are decided before anything is written, so a refused send leaves nothing behind. The outer
/// error is a database error: then writes may be partial, and the caller must roll the whole
/// transaction back.
pub(super) async fn enqueue_run(
    conn: &mut SqliteConnection,
    ops: &[SendOp],
    limits: &StoreLimits,
) -> Result<Vec<Result<Enqueued, StoreError>>, sqlx::Error> {
    let (mut devices, mut sent) = load_state(conn, ops).await?;
    let stored_at = now();
    let mut rows = Rows::default();
    let results: Vec<_> = ops
        .iter()
        .map(|op| decide(op, &mut devices, &mut sent, limits, stored_at, &mut rows))
        .collect();
    write_rows(conn, &rows, &devices, stored_at).await?;
    Ok(results)
}

/// Writes a run's rows with **one** query (a statement per table, or per [`CHUNK`] rows): the
/// idempotency records, the contacts, the devices' counters and the messages.
async fn write_rows(
    conn: &mut SqliteConnection,
    rows: &Rows<'_>,
    devices: &HashMap<String, DeviceState>,
    stored_at: i64,
) -> Result<(), sqlx::Error> {
    let mut sql = String::new();
    for chunk in rows.sent.chunks(CHUNK) {
        sql.push_str("INSERT INTO sent_messages (sender_device, message_id, stored_at) VALUES ");
        sql.push_str(&placeholders(chunk.len(), 3));
        sql.push_str(" ON CONFLICT (sender_device, message_id) DO NOTHING;\n");
    }
    let contacts: Vec<_> = rows.contacts.iter().collect();
    for chunk in contacts.chunks(CHUNK) {
        sql.push_str("INSERT INTO contacts (username, contact) VALUES ");
        sql.push_str(&placeholders(chunk.len(), 2));
        sql.push_str(" ON CONFLICT (username, contact) DO NOTHING;\n");
    }
    for _ in &rows.maybe_contacts {
        // Both directions, each only when `to` is an account.
        for _ in 0..2 {
            sql.push_str(
                "INSERT INTO contacts (username, contact) SELECT ?, ? \
                 WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?) \
                 ON CONFLICT (username, contact) DO NOTHING;\n",
            );
        }
    }
    let touched: Vec<_> = devices.iter().filter(|(_, state)| state.touched).collect();
    for chunk in touched.chunks(CHUNK) {
        sql.push_str("UPDATE devices SET next_seq = v.column2, queued = v.column3 FROM (VALUES ");
        sql.push_str(&placeholders(chunk.len(), 3));
        sql.push_str(") AS v WHERE devices.device_id = v.column1;\n");
    }
    for chunk in rows.messages.chunks(CHUNK) {
        sql.push_str(
            "INSERT INTO messages (recipient_device, seq, sender_device, sender_user, message_id, \
             ciphertext, stored_at) VALUES ",
        );
        sql.push_str(&placeholders(chunk.len(), 7));
        sql.push_str(";\n");
    }
    if sql.is_empty() {
        return Ok(());
    }
    // The values, in the order of the statements above.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for op in &rows.sent {
        query = query.bind(&op.sender).bind(&op.message_id).bind(stored_at);
    }
    for (a, b) in contacts {
        query = query.bind(a).bind(b);
    }
    for (sender_user, to) in &rows.maybe_contacts {
        query = query.bind(sender_user).bind(to).bind(to);
        query = query.bind(to).bind(sender_user).bind(to);
    }
    for (device, state) in touched {
        query = query
            .bind(device.as_str())
            .bind(state.next_seq)
            .bind(i64::try_from(state.queued).unwrap_or(i64::MAX));
    }
    for row in &rows.messages {
        query = query
            .bind(row.recipient)
            .bind(row.seq)
            .bind(row.sender)
            .bind(&row.sender_user)
            .bind(row.message_id)
            .bind(row.ciphertext)
            .bind(stored_at);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// The body of an ack, inside the caller's transaction; only database errors. One statement deletes
/// them all (row values), one more raises `last_acked_seq`.
pub(super) async fn ack_in(
    conn: &mut SqliteConnection,
    device: &str,
    messages: &[MessageRef],
) -> Result<u64, StoreError> {
    if messages.is_empty() {
        return Ok(0);
    }
    let pairs = vec!["(?, ?)"; messages.len()].join(", ");
    let sql = format!(
        "DELETE FROM messages WHERE recipient_device = ? AND (sender_device, message_id) IN \
         (VALUES {pairs}) RETURNING seq"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(device);
    for message in messages {
        query = query.bind(&message.from_device).bind(&message.message_id);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut highest: Option<i64> = None;
    for row in &rows {
        let seq: i64 = row.try_get("seq")?;
        highest = Some(highest.map_or(seq, |h| h.max(seq)));
    }
    if let Some(seq) = highest {
        sqlx::query(
            "UPDATE devices SET last_acked_seq = MAX(last_acked_seq, ?), \
             queued = MAX(queued - ?, 0) WHERE device_id = ?",
        )
        .bind(seq)
        .bind(i64::try_from(rows.len()).unwrap_or(i64::MAX))
        .bind(device)
        .execute(&mut *conn)
        .await?;
    }
    Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
}
