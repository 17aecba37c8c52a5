//! A group commit's SQL (SQLite): all the sends and acks of a batch ([`super::batch`]) in one
//! transaction and **two queries** whatever the batch's length, each a single hand-off to sqlx's SQLite
//! worker thread (under load each hand-off costs about as much as the commit's fsync):
//!
//! 1. `BEGIN IMMEDIATE`, the sequence numbers of the messages the acks name that are still stored, one
//!    read of every device involved (owner, number, queue length, counters) and the idempotency records
//!    of the sends — each statement returning its findings as one row of JSON;
//! 2. the writes — the acknowledged messages' deletes by primary key, a multi-row insert or update per
//!    table — and `COMMIT`.
//!
//! Every list of rows goes in as a `VALUES` list **padded with rows of NULLs to a power of two** (which
//! match nothing and are filtered out of the inserts), so a query's text depends only on the size
//! classes of its lists, not on their exact lengths: the texts repeat from batch to batch and sqlx keeps
//! them prepared (parsing the batch's SQL was a quarter of SQLite's time when every text was new).
//!
//! In between, the rules are decided in memory, send by send in arrival order, against that state (so a
//! send sees the queue lengths and sequence numbers the sends before it left), and sequence numbers are
//! assigned in memory from each device's counter: the writer is the only one that writes them, and it
//! read them inside the same transaction. The acks of a batch run before its sends: an ack names
//! delivered messages, and only committed ones are delivered, so it cannot name a send of its own batch
//! (one that did would be ignored, and the message delivered again: at-least-once holds).

use std::collections::{HashMap, HashSet};

use sqlx::{Row, SqliteConnection};

use super::sqlite::{now, to_u64};
use super::{Enqueued, StoreError, StoreLimits};
use crate::protocol::{Envelope, MessageRef};

/// One ack waiting for the writer.
pub(super) struct AckOp {
    pub(super) device: String,
    pub(super) messages: Vec<MessageRef>,
}

/// One send waiting for the writer.
pub(super) struct SendOp {
    pub(super) sender: String,
    pub(super) message_id: String,
    pub(super) to: String,
    pub(super) envelopes: Vec<Envelope>,
}

/// Rows per multi-row statement (SQLite allows 32,766 bound values per statement; 7 columns × 512
/// stays well under). A power of two: the largest size class.
const CHUNK: usize = 512;

/// How many prepared statements the writer's connection keeps (sqlx's cache, least recently used
/// dropped first).
pub(super) const CACHED_STATEMENTS: usize = 32;

/// A query is kept prepared only when its lists hold at most this many rows, padding included: a
/// prepared row costs ~0.5 KB, so the cache holds at most ~16 MB whatever the batches look like
/// (batches of huge acks or fan-outs, rare, are prepared for their run only).
const MAX_CACHED_ROWS: usize = 1024;

/// The rows, padding included, of the statements for lists of these lengths.
fn padded_rows(lengths: impl IntoIterator<Item = usize>) -> usize {
    lengths
        .into_iter()
        .map(|n| {
            let full = n / CHUNK * CHUNK;
            full + if n % CHUNK == 0 { 0 } else { class(n % CHUNK) }
        })
        .sum()
}

struct DeviceState {
    /// The device's number (`devices.device_no`), the key of its queue.
    no: i64,
    user: String,
    queued: u64,
    next_seq: i64,
    last_acked_seq: i64,
    touched: bool,
}

struct MessageRow<'a> {
    recipient: i64,
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

/// The size class of a list of `n` rows (1 to [`CHUNK`]): the next power of two. A statement is
/// written for the class, and the rows past `n` are bound as NULLs.
fn class(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

/// Binds `count` NULLs (the padding of a statement's list up to its size class).
fn bind_nulls<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    count: usize,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    for _ in 0..count {
        query = query.bind(None::<i64>);
    }
    query
}

// The first query's statements. Each returns **one row** (its findings as a JSON array), not a row per
// item: sqlx hands every row from its SQLite thread to the async side, and a hand-off per row cost more
// than the lookups (`store_load`). Each must look its rows up through an index (`plans_use_indexes` checks
// it against the linked SQLite): a scan would cost, per batch, time in proportion to every send recorded
// within the message TTL. The pairs are written `IN (SELECT … FROM (VALUES …))`, which SQLite 3.40 also
// searches by index (it scans `sent_messages` for the bare `IN (VALUES …)` form).

/// The stored messages that `refs` acknowledged messages name, as `[ack index, seq]` pairs. A row is
/// `(ack index, acking device, seq, sender, message id)`: each message is found by its primary key
/// `(recipient_no, seq)` and counted only when its sender and message id match too. They are deleted
/// by the second query.
fn ack_lookup(refs: usize) -> String {
    format!(
        "SELECT 'a' AS kind, json_group_array(json_array(v.column1, m.seq)) AS j \
         FROM (VALUES {}) AS v JOIN devices d ON d.device_id = v.column2 \
         JOIN messages m ON m.recipient_no = d.device_no AND m.seq = v.column3 \
         AND m.sender_device = v.column4 AND m.message_id = v.column5;\n",
        placeholders(refs, 5)
    )
}

/// The state of `devices` devices: owner, number and the queue's counters.
fn device_lookup(devices: usize) -> String {
    format!(
        "SELECT 'd' AS kind, json_group_array(json_array(d.device_id, d.username, \
         d.device_no, q.queued, q.next_seq, q.last_acked_seq)) AS j \
         FROM devices d JOIN queues q ON q.device_no = d.device_no WHERE d.device_id IN ({});\n",
        vec!["?"; devices].join(", ")
    )
}

/// The idempotency records of `sends` sends.
fn sent_lookup(sends: usize) -> String {
    format!(
        "SELECT 's' AS kind, json_group_array(json_array(sender_device, message_id)) AS j \
         FROM sent_messages WHERE (message_id, sender_device) IN \
         (SELECT column1, column2 FROM (VALUES {}));\n",
        placeholders(sends, 2)
    )
}

/// Deletes `rows` acknowledged messages, each `(recipient_no, seq)`.
fn acked_delete(rows: usize) -> String {
    format!(
        "DELETE FROM messages WHERE (recipient_no, seq) IN \
         (SELECT column1, column2 FROM (VALUES {}));\n",
        placeholders(rows, 2)
    )
}

/// A found row's JSON, as the type it must have (a malformed one is a database error, not a panic).
fn findings<T: serde::de::DeserializeOwned>(json: &str) -> Result<Vec<T>, sqlx::Error> {
    serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// What the first query found.
struct Loaded {
    devices: HashMap<String, DeviceState>,
    sent: HashSet<(String, String)>,
    /// Per ack: the sequence numbers of the messages it names that are still stored (each counted for
    /// the first ack of the batch that names it, as if the acks ran one after the other).
    deleted: Vec<Vec<i64>>,
}

/// The first query: `BEGIN IMMEDIATE`, what the acks name, the devices and the idempotency records (a
/// statement per [`CHUNK`] items, so no request, however large, passes SQLite's limit on bound values
/// and fails the batch).
async fn begin_and_load(
    conn: &mut SqliteConnection,
    sends: &[SendOp],
    acks: &[AckOp],
) -> Result<Loaded, sqlx::Error> {
    let refs: Vec<(i64, &AckOp, &MessageRef)> = acks
        .iter()
        .enumerate()
        .flat_map(|(index, ack)| {
            let index = i64::try_from(index).unwrap_or(i64::MAX);
            ack.messages
                .iter()
                .map(move |message| (index, ack, message))
        })
        .collect();
    let mut asked = HashSet::new();
    let mut wanted: Vec<&str> = Vec::new();
    let named =
        acks.iter()
            .map(|a| &a.device)
            .chain(sends.iter().flat_map(|op| {
                std::iter::once(&op.sender).chain(op.envelopes.iter().map(|e| &e.device))
            }));
    for device in named {
        if asked.insert(device.as_str()) {
            wanted.push(device);
        }
    }
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    for part in refs.chunks(CHUNK) {
        sql.push_str(&ack_lookup(class(part.len())));
    }
    for part in wanted.chunks(CHUNK) {
        sql.push_str(&device_lookup(class(part.len())));
    }
    for part in sends.chunks(CHUNK) {
        sql.push_str(&sent_lookup(class(part.len())));
    }
    // Its text depends only on the lists' size classes: kept prepared in the connection's cache unless
    // it is large.
    let cached = padded_rows([refs.len(), wanted.len(), sends.len()]) <= MAX_CACHED_ROWS;
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(cached);
    for part in refs.chunks(CHUNK) {
        for (index, ack, message) in part {
            query = query
                .bind(*index)
                .bind(&ack.device)
                .bind(i64::try_from(message.seq).unwrap_or(i64::MAX))
                .bind(&message.from_device)
                .bind(&message.message_id);
        }
        query = bind_nulls(query, (class(part.len()) - part.len()) * 5);
    }
    for part in wanted.chunks(CHUNK) {
        for device in part {
            query = query.bind(*device);
        }
        query = bind_nulls(query, class(part.len()) - part.len());
    }
    for part in sends.chunks(CHUNK) {
        for op in part {
            query = query.bind(&op.message_id).bind(&op.sender);
        }
        query = bind_nulls(query, (class(part.len()) - part.len()) * 2);
    }
    let mut loaded = Loaded {
        devices: HashMap::new(),
        sent: HashSet::new(),
        deleted: vec![Vec::new(); acks.len()],
    };
    let mut found: Vec<(i64, i64)> = Vec::new();
    for row in query.fetch_all(&mut *conn).await? {
        let kind: String = row.try_get("kind")?;
        let json: String = row.try_get("j")?;
        match kind.as_str() {
            "d" => {
                for (device, user, no, queued, next_seq, last_acked_seq) in
                    findings::<(String, String, i64, i64, i64, i64)>(&json)?
                {
                    let state = DeviceState {
                        no,
                        user,
                        queued: to_u64(queued),
                        next_seq,
                        last_acked_seq,
                        touched: false,
                    };
                    loaded.devices.insert(device, state);
                }
            }
            "s" => loaded.sent.extend(findings::<(String, String)>(&json)?),
            _ => found.extend(findings::<(i64, i64)>(&json)?),
        }
    }
    // A message two acks of the batch name (a device acking on two connections) counts for the first,
    // as if the acks ran one after the other; claimed per device (two devices' seqs are separate spaces).
    found.sort_unstable();
    let mut claimed: HashSet<(&str, i64)> = HashSet::new();
    for (index, seq) in found {
        let Some((index, ack)) = usize::try_from(index)
            .ok()
            .and_then(|i| Some((i, acks.get(i)?)))
        else {
            continue;
        };
        if claimed.insert((ack.device.as_str(), seq)) {
            loaded.deleted[index].push(seq);
        }
    }
    Ok(loaded)
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
    // A retry of a stored id is a duplicate before any other check (its queues may be full or its
    // devices gone by now; a refusal would say the id is unspent, and a re-send would arrive twice).
    let key = (op.sender.clone(), op.message_id.clone());
    if sent.contains(&key) {
        return Ok(Enqueued::Duplicate);
    }
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
    sent.insert(key);
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
            recipient: state.no,
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

/// The results of a batch: one per send and, per ack, how many messages it deleted.
pub(super) type Outcome = (Vec<Result<Enqueued, StoreError>>, Vec<u64>);

/// Runs a batch's sends and acks in one transaction and commits it (see the module). Every refusal
/// (`UnknownDevice`, `NotARecipient`, `RepeatedDevice`, `QueueFull`) and a duplicate are decided before
/// anything is written, so a refused send leaves nothing behind. The outer error is a database error:
/// the transaction did not commit, and the caller must roll it back (it may still be open).
pub(super) async fn run_batch(
    conn: &mut SqliteConnection,
    sends: &[SendOp],
    acks: &[AckOp],
    limits: &StoreLimits,
) -> Result<Outcome, sqlx::Error> {
    let Loaded {
        mut devices,
        mut sent,
        deleted,
    } = begin_and_load(conn, sends, acks).await?;
    let mut counts = Vec::with_capacity(acks.len());
    for (ack, seqs) in acks.iter().zip(&deleted) {
        let n = u64::try_from(seqs.len()).unwrap_or(u64::MAX);
        counts.push(n);
        if let (Some(state), Some(highest)) = (devices.get_mut(&ack.device), seqs.iter().max()) {
            state.queued = state.queued.saturating_sub(n);
            state.last_acked_seq = state.last_acked_seq.max(*highest);
            state.touched = true;
        }
    }
    let stored_at = now();
    let mut rows = Rows::default();
    let results: Vec<_> = sends
        .iter()
        .map(|op| decide(op, &mut devices, &mut sent, limits, stored_at, &mut rows))
        .collect();
    write_and_commit(conn, &rows, &devices, (acks, &deleted), stored_at).await?;
    Ok((results, counts))
}

/// The second query: the batch's writes (a statement per table, or per [`CHUNK`] rows: the acknowledged
/// messages' deletes, the idempotency records, the contacts, the devices' counters, the messages), then
/// `COMMIT`. Each list is padded with NULL rows to its size class (see the module).
async fn write_and_commit(
    conn: &mut SqliteConnection,
    rows: &Rows<'_>,
    devices: &HashMap<String, DeviceState>,
    (acks, deleted): (&[AckOp], &[Vec<i64>]),
    stored_at: i64,
) -> Result<(), sqlx::Error> {
    // The acknowledged messages, by primary key. An ack found messages only when its device exists,
    // so its number is known here.
    let gone: Vec<(i64, i64)> = acks
        .iter()
        .zip(deleted)
        .flat_map(|(ack, seqs)| {
            let no = devices.get(&ack.device).map_or(0, |state| state.no);
            seqs.iter().map(move |seq| (no, *seq))
        })
        .collect();
    // Contacts: both directions of every conversation; `Some(to)` in the third column when the pair is
    // to be recorded only if `to` is an account (copies to the sender's own devices only).
    let mut contacts: Vec<(&str, &str, Option<&str>)> = rows
        .contacts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str(), None))
        .collect();
    for (sender_user, to) in &rows.maybe_contacts {
        contacts.push((sender_user, to, Some(to)));
        contacts.push((to, sender_user, Some(to)));
    }
    let touched: Vec<_> = devices.values().filter(|state| state.touched).collect();

    let mut sql = String::new();
    for part in gone.chunks(CHUNK) {
        sql.push_str(&acked_delete(class(part.len())));
    }
    for part in rows.sent.chunks(CHUNK) {
        sql.push_str(&format!(
            "INSERT INTO sent_messages (message_id, sender_device, stored_at) \
             SELECT column1, column2, column3 FROM (VALUES {}) WHERE column1 IS NOT NULL \
             ON CONFLICT (message_id, sender_device) DO NOTHING;\n",
            placeholders(class(part.len()), 3)
        ));
    }
    for part in contacts.chunks(CHUNK) {
        sql.push_str(&format!(
            "INSERT INTO contacts (username, contact) SELECT column1, column2 FROM (VALUES {}) \
             WHERE column1 IS NOT NULL AND (column3 IS NULL OR \
             EXISTS (SELECT 1 FROM accounts WHERE username = column3)) \
             ON CONFLICT (username, contact) DO NOTHING;\n",
            placeholders(class(part.len()), 3)
        ));
    }
    for part in touched.chunks(CHUNK) {
        sql.push_str(&format!(
            "UPDATE queues SET next_seq = v.column2, queued = v.column3, last_acked_seq = v.column4 \
             FROM (VALUES {}) AS v WHERE queues.device_no = v.column1;\n",
            placeholders(class(part.len()), 4)
        ));
    }
    for part in rows.messages.chunks(CHUNK) {
        sql.push_str(&format!(
            "INSERT INTO messages (recipient_no, seq, sender_device, sender_user, message_id, \
             ciphertext, stored_at) SELECT column1, column2, column3, column4, column5, column6, \
             column7 FROM (VALUES {}) WHERE column1 IS NOT NULL;\n",
            placeholders(class(part.len()), 7)
        ));
    }
    sql.push_str("COMMIT;");
    // The values, in the order of the statements above; the text depends only on the size classes, so
    // it is kept prepared unless it is large.
    let cached = padded_rows([
        gone.len(),
        rows.sent.len(),
        contacts.len(),
        touched.len(),
        rows.messages.len(),
    ]) <= MAX_CACHED_ROWS;
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(cached);
    for part in gone.chunks(CHUNK) {
        for (no, seq) in part {
            query = query.bind(*no).bind(*seq);
        }
        query = bind_nulls(query, (class(part.len()) - part.len()) * 2);
    }
    for part in rows.sent.chunks(CHUNK) {
        for op in part {
            query = query.bind(&op.message_id).bind(&op.sender).bind(stored_at);
        }
        query = bind_nulls(query, (class(part.len()) - part.len()) * 3);
    }
    for part in contacts.chunks(CHUNK) {
        for (a, b, must_exist) in part {
            query = query.bind(*a).bind(*b).bind(*must_exist);
        }
        query = bind_nulls(query, (class(part.len()) - part.len()) * 3);
    }
    for part in touched.chunks(CHUNK) {
        for state in part {
            query = query
                .bind(state.no)
                .bind(state.next_seq)
                .bind(i64::try_from(state.queued).unwrap_or(i64::MAX))
                .bind(state.last_acked_seq);
        }
        query = bind_nulls(query, (class(part.len()) - part.len()) * 4);
    }
    for part in rows.messages.chunks(CHUNK) {
        for row in part {
            query = query
                .bind(row.recipient)
                .bind(row.seq)
                .bind(row.sender)
                .bind(&row.sender_user)
                .bind(row.message_id)
                .bind(row.ciphertext)
                .bind(stored_at);
        }
        query = bind_nulls(query, (class(part.len()) - part.len()) * 7);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{
        CHUNK, MAX_CACHED_ROWS, ack_lookup, acked_delete, class, device_lookup, padded_rows,
        sent_lookup,
    };

    /// Lists are padded to powers of two within a chunk, so few texts recur; a batch whose padded
    /// lists exceed the cache's row bound is not kept prepared.
    #[test]
    fn size_classes_and_the_cache_bound() {
        assert_eq!(
            [0, 1, 2, 3, 5, 300, 512].map(class),
            [1, 1, 2, 4, 8, 512, 512]
        );
        assert_eq!(padded_rows([0, 0]), 0);
        assert_eq!(padded_rows([3, 1]), 5);
        assert_eq!(padded_rows([CHUNK + 1]), CHUNK + 1);
        assert_eq!(padded_rows([2 * CHUNK + 100]), 2 * CHUNK + 128);
        assert!(padded_rows([256, 256, 256]) <= MAX_CACHED_ROWS);
        assert!(padded_rows([CHUNK * 3]) > MAX_CACHED_ROWS);
    }

    /// Every lookup of the first query, and the acks' delete, searches an index in the SQLite this crate links (a plan that
    /// scans a table would cost time in proportion to everything ever sent).
    #[tokio::test]
    async fn plans_use_indexes() {
        let mut conn = crate::store::sqlite::tests::migrated_in_memory().await;
        // Each lookup searches by its whole key: a message by `(recipient_no, seq)` (not by device alone,
        // which would walk the device's whole queue), a device by its id, an idempotency record by both
        // of its columns.
        for (sql, binds, key) in [
            (ack_lookup(3), 15, "(recipient_no=? AND seq=?)"),
            (device_lookup(3), 3, "(device_id=?)"),
            (sent_lookup(3), 6, "(message_id=? AND sender_device=?)"),
            (acked_delete(4), 8, "(recipient_no=? AND seq=?)"),
        ] {
            let plan = crate::store::sqlite::tests::query_plan(&mut conn, &sql, binds).await;
            assert!(
                plan.iter().any(|step| step.starts_with("SEARCH")),
                "{sql}: {plan:?}"
            );
            // Scanning the batch's own VALUES list is fine; scanning a table is not.
            let scans_table = |step: &String| {
                ["messages", "sent_messages", "devices"]
                    .iter()
                    .any(|table| step.starts_with(&format!("SCAN {table}")))
            };
            assert!(!plan.iter().any(scans_table), "{sql}: {plan:?}");
            assert!(
                plan.iter()
                    .any(|step| step.starts_with("SEARCH") && step.ends_with(key)),
                "{sql}: {plan:?}"
            );
        }
    }
}
