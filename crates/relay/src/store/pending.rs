//! Reading a device's queue for delivery (SQLite) under a byte budget: a batch holds at most `limit`
//! messages and stops before the ciphertext it holds would pass `max_bytes` (at least one message
//! always, so a queue never stalls). Without the budget a batch of 100 near-1 MiB messages would hold
//! ~100 MiB per connection while it waits on a peer that does not read.
//!
//! Two reads: the sizes of the next `limit` messages (`octet_length`, which SQLite answers from the
//! record header, without loading the ciphertext), then the messages up to the last one that fits.
//! Between them an ack may delete some (the batch is smaller) and new messages get higher sequence
//! numbers (not in this batch): nothing is skipped.

use sqlx::{Row, SqlitePool};

use super::StoredMessage;
use super::sqlite::stored_message;

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Up to `limit` queued messages of `device` after `after`, within `max_bytes` of ciphertext (at least
/// one), in order; and whether more may follow (the batch stopped at `limit` or at the budget).
pub(super) async fn pending_within(
    reader: &SqlitePool,
    device: &str,
    after: u64,
    limit: u32,
    max_bytes: usize,
) -> Result<(Vec<StoredMessage>, bool), sqlx::Error> {
    let sizes = sqlx::query(
        "SELECT seq, octet_length(ciphertext) AS n FROM messages \
         WHERE recipient_no = (SELECT device_no FROM devices WHERE device_id = ?) AND seq > ? \
         ORDER BY seq LIMIT ?",
    )
    .bind(device)
    .bind(to_i64(after))
    .bind(i64::from(limit))
    .fetch_all(reader)
    .await?;
    let (mut last, mut bytes, mut taken) = (None, 0usize, 0usize);
    for row in &sizes {
        let n = usize::try_from(row.try_get::<i64, _>("n")?).unwrap_or(usize::MAX);
        if taken > 0 && bytes.saturating_add(n) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(n);
        taken += 1;
        last = Some(row.try_get::<i64, _>("seq")?);
    }
    let more = sizes.len() >= usize::try_from(limit).unwrap_or(usize::MAX) || taken < sizes.len();
    let Some(last) = last else {
        return Ok((Vec::new(), false));
    };
    let rows = sqlx::query(
        "SELECT seq, sender_user, sender_device, message_id, ciphertext, stored_at FROM messages \
         WHERE recipient_no = (SELECT device_no FROM devices WHERE device_id = ?) AND seq > ? \
         AND seq <= ? ORDER BY seq LIMIT ?",
    )
    .bind(device)
    .bind(to_i64(after))
    .bind(last)
    .bind(i64::from(limit))
    .fetch_all(reader)
    .await?;
    let messages = rows
        .iter()
        .map(stored_message)
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok((messages, more))
}
