//! The writes of `send` and `ack` (SQLite), run by the group-commit writer ([`super::batch`]) inside
//! its transaction.

use std::collections::HashMap;

use sqlx::{Row, SqliteConnection};

use super::sqlite::{now, to_u64};
use super::{Enqueued, StoreError, StoreLimits};
use crate::protocol::{Envelope, MessageRef};

/// The body of an enqueue, inside the caller's transaction (one of a group commit). Every refusal
/// (`UnknownDevice`, `NotARecipient`, `QueueFull`) and a duplicate are decided before the first write, so a refused
/// request leaves nothing behind; a database error leaves partial writes, and the caller must then roll
/// the whole transaction back.
pub(super) async fn enqueue_in(
    conn: &mut SqliteConnection,
    sender: &str,
    message_id: &str,
    to: &str,
    envelopes: &[Envelope],
    limits: &StoreLimits,
) -> Result<Enqueued, StoreError> {
    // One lookup for the sender and every recipient device (owner and queue length).
    let placeholders = vec!["?"; envelopes.len() + 1].join(", ");
    let sql = format!(
        "SELECT device_id, username, queued FROM devices WHERE device_id IN ({placeholders})"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sender);
    for envelope in envelopes {
        query = query.bind(&envelope.device);
    }
    let mut owners = HashMap::new();
    let mut queued = HashMap::new();
    for row in query.fetch_all(&mut *conn).await? {
        let device: String = row.try_get("device_id")?;
        let user: String = row.try_get("username")?;
        queued.insert(device.clone(), to_u64(row.try_get("queued")?));
        owners.insert(device, user);
    }
    let Some(sender_user) = owners.get(sender).cloned() else {
        return Err(StoreError::UnknownDevice {
            device: sender.to_owned(),
        });
    };
    let mut to_exists = to == sender_user;
    for envelope in envelopes {
        match owners.get(&envelope.device) {
            Some(owner) if owner == to => to_exists = true,
            Some(owner) if *owner == sender_user => {}
            _ => {
                return Err(StoreError::NotARecipient {
                    device: envelope.device.clone(),
                    username: to.to_owned(),
                });
            }
        }
        if queued.get(&envelope.device).copied().unwrap_or(0) >= limits.max_queued_per_device {
            return Err(StoreError::QueueFull {
                device: envelope.device.clone(),
                limit: limits.max_queued_per_device,
            });
        }
    }
    let now = now();
    let fresh = sqlx::query(
        "INSERT INTO sent_messages (sender_device, message_id, stored_at) VALUES (?, ?, ?) \
         ON CONFLICT (sender_device, message_id) DO NOTHING",
    )
    .bind(sender)
    .bind(message_id)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if fresh == 0 {
        return Ok(Enqueued::Duplicate);
    }
    if to != sender_user {
        if to_exists {
            sqlx::query(
                "INSERT INTO contacts (username, contact) VALUES (?, ?), (?, ?) \
                 ON CONFLICT (username, contact) DO NOTHING",
            )
            .bind(&sender_user)
            .bind(to)
            .bind(to)
            .bind(&sender_user)
            .execute(&mut *conn)
            .await?;
        } else {
            // Copies to the sender's own devices only: `to` may not even exist.
            for (a, b) in [(sender_user.as_str(), to), (to, sender_user.as_str())] {
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
    }
    let mut stored = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        let seq: i64 = sqlx::query(
            "UPDATE devices SET next_seq = next_seq + 1, queued = queued + 1 WHERE device_id = ? \
             RETURNING next_seq",
        )
        .bind(&envelope.device)
        .fetch_one(&mut *conn)
        .await?
        .try_get("next_seq")?;
        sqlx::query(
            "INSERT INTO messages (recipient_device, seq, sender_device, sender_user, message_id, ciphertext, stored_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&envelope.device)
        .bind(seq)
        .bind(sender)
        .bind(&sender_user)
        .bind(message_id)
        .bind(&envelope.ciphertext)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        stored.push((envelope.device.clone(), to_u64(seq)));
    }
    Ok(Enqueued::Stored(stored))
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
