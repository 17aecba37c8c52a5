//! The writes of `send` and `ack` (SQLite), run by the group-commit writer ([`super::batch`]) inside
//! its transaction.
//!
//! Sends are written **per run**, not per send: a run of consecutive sends in a batch costs a fixed
//! number of statements whatever its length — one read of every device involved (owner, queue length,
//! sequence counter), one read of the idempotency records, then one multi-row insert or update per
//! table. The rules are decided in memory, send by send in arrival order, against that state (so a
//! send sees the queue lengths and sequence numbers the sends before it in the run left), and sequence
//! numbers are assigned in memory from each device's counter: the writer is the only one that writes
//! them, and it read them inside the same transaction.

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

/// Rows per multi-row statement (SQLite allows 32,766 bound values; 7 columns × 500 stays well under).
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

async fn load_devices(
    conn: &mut SqliteConnection,
    ops: &[SendOp],
) -> Result<HashMap<String, DeviceState>, sqlx::Error> {
    let mut wanted: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for op in ops {
        for device in std::iter::once(&op.sender).chain(op.envelopes.iter().map(|e| &e.device)) {
            if seen.insert(device.as_str()) {
                wanted.push(device);
            }
        }
    }
    let mut devices = HashMap::with_capacity(wanted.len());
    for chunk in wanted.chunks(CHUNK) {
        let sql = format!(
            "SELECT device_id, username, queued, next_seq FROM devices WHERE device_id IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for device in chunk {
            query = query.bind(*device);
        }
        for row in query.fetch_all(&mut *conn).await? {
            devices.insert(
                row.try_get("device_id")?,
                DeviceState {
                    user: row.try_get("username")?,
                    queued: to_u64(row.try_get("queued")?),
                    next_seq: row.try_get("next_seq")?,
                    touched: false,
                },
            );
        }
    }
    Ok(devices)
}

async fn load_sent(
    conn: &mut SqliteConnection,
    ops: &[SendOp],
) -> Result<HashSet<(String, String)>, sqlx::Error> {
    let mut sent = HashSet::new();
    for chunk in ops.chunks(CHUNK) {
        let sql = format!(
            "SELECT sender_device, message_id FROM sent_messages WHERE (sender_device, message_id) IN \
             (VALUES {})",
            placeholders(chunk.len(), 2)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for op in chunk {
            query = query.bind(&op.sender).bind(&op.message_id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            sent.insert((row.try_get("sender_device")?, row.try_get("message_id")?));
        }
    }
    Ok(sent)
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
    let mut devices = load_devices(conn, ops).await?;
    let mut sent = load_sent(conn, ops).await?;
    let stored_at = now();
    let mut rows = Rows::default();
    let results: Vec<_> = ops
        .iter()
        .map(|op| decide(op, &mut devices, &mut sent, limits, stored_at, &mut rows))
        .collect();
    for chunk in rows.sent.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO sent_messages (sender_device, message_id, stored_at) VALUES {} \
             ON CONFLICT (sender_device, message_id) DO NOTHING",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for op in chunk {
            query = query.bind(&op.sender).bind(&op.message_id).bind(stored_at);
        }
        query.execute(&mut *conn).await?;
    }
    let contacts: Vec<_> = rows.contacts.into_iter().collect();
    for chunk in contacts.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO contacts (username, contact) VALUES {} \
             ON CONFLICT (username, contact) DO NOTHING",
            placeholders(chunk.len(), 2)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (a, b) in chunk {
            query = query.bind(a).bind(b);
        }
        query.execute(&mut *conn).await?;
    }
    for (sender_user, to) in &rows.maybe_contacts {
        for (a, b) in [(sender_user.as_str(), to.as_str()), (to, sender_user)] {
            sqlx::query(
                "INSERT INTO contacts (username, contact) SELECT ?, ? \
                 WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?) \
                 ON CONFLICT (username, contact) DO NOTHING",
            )
            .bind(a)
            .bind(b)
            .bind(to)
            .execute(&mut *conn)
            .await?;
        }
    }
    let touched: Vec<_> = devices.iter().filter(|(_, state)| state.touched).collect();
    for chunk in touched.chunks(CHUNK) {
        let sql = format!(
            "UPDATE devices SET next_seq = v.column2, queued = v.column3 FROM (VALUES {}) AS v \
             WHERE devices.device_id = v.column1",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (device, state) in chunk {
            query = query
                .bind(device.as_str())
                .bind(state.next_seq)
                .bind(i64::try_from(state.queued).unwrap_or(i64::MAX));
        }
        query.execute(&mut *conn).await?;
    }
    for chunk in rows.messages.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO messages (recipient_device, seq, sender_device, sender_user, message_id, \
             ciphertext, stored_at) VALUES {}",
            placeholders(chunk.len(), 7)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
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
    }
    Ok(results)
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
