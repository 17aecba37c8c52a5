//! The embedded SQLite backend: one database file, WAL journal, `synchronous = FULL` (a transaction is on
//! disk when it commits), migrations embedded below as SQL strings and applied in order at open.
//!
//! Writes go through a pool of exactly one connection, so write transactions never contend inside the
//! process (no `SQLITE_BUSY` upgrades); reads use a separate small pool, which WAL lets run beside the
//! writer. Sends and acks are group-committed by one writer task (`store::batch`).

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};

use super::batch::Batcher;
use super::{
    Admission, DeviceRecord, Enqueued, Registration, Store, StoreError, StoredMessage, admission,
};
use crate::protocol::{DeviceBundle, DeviceId, DeviceKeys, Envelope, MessageRef, PreKey};

/// The schema, one migration per entry; entry `i` is schema version `i + 1`. Never edit an entry: add one.
/// The tables are plain SQL that PostgreSQL also accepts (`BIGINT`, `TEXT`, composite keys); migration
/// 5's copy of the old rows reads SQLite's `rowid` (a PostgreSQL backend starts at the current schema).
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    username    TEXT PRIMARY KEY,
    created_at  BIGINT NOT NULL
);
CREATE TABLE devices (
    device_id       TEXT PRIMARY KEY,
    username        TEXT NOT NULL REFERENCES accounts(username),
    identity_key    TEXT NOT NULL,
    signing_key     TEXT NOT NULL,
    next_seq        BIGINT NOT NULL DEFAULT 0,
    last_acked_seq  BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL
);
CREATE INDEX devices_by_username ON devices(username);
CREATE TABLE one_time_keys (
    device_id   TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    key_id      TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    PRIMARY KEY (device_id, key_id)
);
CREATE TABLE fallback_keys (
    device_id   TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
    key_id      TEXT NOT NULL,
    public_key  TEXT NOT NULL
);
CREATE TABLE sent_messages (
    sender_device   TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    stored_at       BIGINT NOT NULL,
    PRIMARY KEY (sender_device, message_id)
);
CREATE TABLE messages (
    recipient_device    TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    seq                 BIGINT NOT NULL,
    sender_device       TEXT NOT NULL,
    sender_user         TEXT NOT NULL,
    message_id          TEXT NOT NULL,
    ciphertext          TEXT NOT NULL,
    stored_at           BIGINT NOT NULL,
    PRIMARY KEY (recipient_device, seq),
    UNIQUE (recipient_device, sender_device, message_id)
);
"#,
    r#"
CREATE TABLE contacts (
    username    TEXT NOT NULL REFERENCES accounts(username),
    contact     TEXT NOT NULL REFERENCES accounts(username),
    PRIMARY KEY (username, contact)
);
"#,
    r#"
CREATE TABLE invites (
    token_hash  TEXT PRIMARY KEY,
    username    TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE devices ADD COLUMN queued BIGINT NOT NULL DEFAULT 0;
UPDATE devices SET queued = (SELECT COUNT(*) FROM messages WHERE recipient_device = devices.device_id);
"#,
    // 5: the queue layout. A group commit used to dirty about five WAL pages per send, because every
    // index it wrote was keyed by 64-character device ids and random message ids, so each send landed on
    // a leaf of its own in each. Now: devices get a number, and the per-send writes go to narrow or
    // append-ordered places — `queues` (the counters a send updates, ~30 bytes a row), `messages` keyed
    // by (recipient number, seq) without the (recipient, sender, message id) index (acks name the seq),
    // and `sent_messages` keyed by (message id, sender), which appends when ids start with the time.
    // Device numbers are never reused (`device_numbers` keeps the last one issued), so no stray row of a
    // removed device could ever be taken for a new device's.
    r#"
ALTER TABLE devices ADD COLUMN device_no BIGINT;
UPDATE devices SET device_no = rowid;
CREATE UNIQUE INDEX devices_by_no ON devices(device_no);
CREATE TABLE device_numbers (last_issued BIGINT NOT NULL);
INSERT INTO device_numbers (last_issued) SELECT COALESCE(MAX(device_no), 0) FROM devices;
CREATE TABLE queues (
    device_no       INTEGER PRIMARY KEY REFERENCES devices(device_no) ON DELETE CASCADE,
    next_seq        BIGINT NOT NULL DEFAULT 0,
    last_acked_seq  BIGINT NOT NULL DEFAULT 0,
    queued          BIGINT NOT NULL DEFAULT 0
);
INSERT INTO queues (device_no, next_seq, last_acked_seq, queued)
    SELECT device_no, next_seq, last_acked_seq, 0 FROM devices;
ALTER TABLE devices DROP COLUMN next_seq;
ALTER TABLE devices DROP COLUMN last_acked_seq;
ALTER TABLE devices DROP COLUMN queued;
CREATE TABLE messages_5 (
    recipient_no    BIGINT NOT NULL REFERENCES devices(device_no) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    sender_device   TEXT NOT NULL,
    sender_user     TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    ciphertext      TEXT NOT NULL,
    stored_at       BIGINT NOT NULL,
    PRIMARY KEY (recipient_no, seq)
);
INSERT INTO messages_5 (recipient_no, seq, sender_device, sender_user, message_id, ciphertext, stored_at)
    SELECT d.device_no, m.seq, m.sender_device, m.sender_user, m.message_id, m.ciphertext, m.stored_at
    FROM messages m JOIN devices d ON d.device_id = m.recipient_device ORDER BY m.rowid;
DROP TABLE messages;
ALTER TABLE messages_5 RENAME TO messages;
UPDATE queues SET queued = (SELECT COUNT(*) FROM messages WHERE recipient_no = queues.device_no);
CREATE TABLE sent_messages_5 (
    message_id      TEXT NOT NULL,
    sender_device   TEXT NOT NULL,
    stored_at       BIGINT NOT NULL,
    PRIMARY KEY (message_id, sender_device)
);
INSERT INTO sent_messages_5 (message_id, sender_device, stored_at)
    SELECT message_id, sender_device, stored_at FROM sent_messages;
DROP TABLE sent_messages;
ALTER TABLE sent_messages_5 RENAME TO sent_messages;
"#,
    // 6: expiry by age through an index instead of a scan of every stored message and idempotency record
    // (an hourly pass over 30 days of sends held the writer). Both indexes grow at their end (a row's
    // age is the time it was stored), so a send writes them cheaply.
    r#"
CREATE INDEX messages_by_age ON messages(stored_at);
CREATE INDEX sent_messages_by_age ON sent_messages(stored_at);
"#,
    // 7: an account's link tokens, found by account (at most MAX_LINK_TOKENS_PER_ACCOUNT are kept).
    r#"
CREATE INDEX invites_by_username ON invites(username);
"#,
];

/// The relay's state in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Sends and acks go through the group-commit writer (see [`super::batch`]).
    batch: Batcher,
}

pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A stored message from a row of `seq, sender_user, sender_device, message_id, ciphertext, stored_at`.
pub(super) fn stored_message(row: &sqlx::sqlite::SqliteRow) -> Result<StoredMessage, sqlx::Error> {
    Ok(StoredMessage {
        seq: to_u64(row.try_get("seq")?),
        from_user: row.try_get("sender_user")?,
        from_device: row.try_get("sender_device")?,
        message_id: row.try_get("message_id")?,
        ciphertext: row.try_get("ciphertext")?,
        stored_at: row.try_get("stored_at")?,
    })
}

pub(super) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations, with the
    /// default limits.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, super::StoreLimits::default()).await
    }

    /// [`SqliteStore::open`] with other limits.
    pub async fn open_with(
        path: impl AsRef<Path>,
        limits: super::StoreLimits,
    ) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // An embedded database has no link to test: without this, every checkout pings the connection,
        // one more round trip to sqlx's SQLite thread per group commit and per read.
        // The group commit keeps its statements prepared (see `send`); the cache bounds how many.
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .connect_with(
                options
                    .clone()
                    .statement_cache_capacity(super::send::CACHED_STATEMENTS),
            )
            .await?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        let batch = Batcher::spawn(writer.clone(), limits);
        Ok(SqliteStore {
            writer,
            reader,
            batch,
        })
    }

    /// The schema version of the open database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
            .fetch_one(&self.reader)
            .await?;
        Ok(row.try_get("v")?)
    }

    /// Closes both pools, waiting for their connections to finish.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        .fetch_one(&mut *tx)
        .await?
        .try_get("v")?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_version (version) VALUES (?)")
            .bind(version)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Rows one expiry transaction deletes at most (of each table).
const EXPIRY_CHUNK: u64 = 5_000;

/// The oldest messages stored before a cutoff (at most a limit), as one row of JSON `[rowid,
/// recipient_no]` pairs.
const OLDEST_MESSAGES: &str = "SELECT json_group_array(json_array(rowid, recipient_no)) AS j FROM \
     (SELECT rowid, recipient_no FROM messages WHERE stored_at < ? ORDER BY stored_at LIMIT ?)";

/// Deletes the oldest idempotency records stored before a cutoff (at most a limit).
const OLDEST_RECORDS_DELETE: &str = "DELETE FROM sent_messages WHERE rowid IN \
     (SELECT rowid FROM sent_messages WHERE stored_at < ? ORDER BY stored_at LIMIT ?)";

/// One expiry transaction: the oldest messages and idempotency records stored before `cutoff`, at most
/// [`EXPIRY_CHUNK`] of each, found through their age indexes; the queues of the messages' recipients
/// are decremented by what they lost. Returns how many of each were deleted.
async fn expire_chunk(pool: &SqlitePool, cutoff: i64) -> Result<(u64, u64), StoreError> {
    let mut tx = pool.begin().await?;
    let json: String = sqlx::query(OLDEST_MESSAGES)
        .bind(cutoff)
        .bind(to_i64(EXPIRY_CHUNK))
        .fetch_one(&mut *tx)
        .await?
        .try_get("j")?;
    let doomed: Vec<(i64, i64)> =
        serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let mut lost: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    for (_, recipient) in &doomed {
        *lost.entry(*recipient).or_default() += 1;
    }
    if !doomed.is_empty() {
        let rowids = serde_json::to_string(&doomed.iter().map(|(r, _)| r).collect::<Vec<_>>())
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        sqlx::query("DELETE FROM messages WHERE rowid IN (SELECT value FROM json_each(?))")
            .bind(rowids)
            .execute(&mut *tx)
            .await?;
        let counts = serde_json::to_string(&lost.into_iter().collect::<Vec<_>>())
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        sqlx::query(
            "UPDATE queues SET queued = MAX(0, queued - v.value ->> 1) FROM json_each(?) AS v \
             WHERE queues.device_no = v.value ->> 0",
        )
        .bind(counts)
        .execute(&mut *tx)
        .await?;
    }
    let records = sqlx::query(OLDEST_RECORDS_DELETE)
        .bind(cutoff)
        .bind(to_i64(EXPIRY_CHUNK))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok((u64::try_from(doomed.len()).unwrap_or(u64::MAX), records))
}

pub(super) async fn device_user(
    conn: &mut SqliteConnection,
    device: &str,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT username FROM devices WHERE device_id = ?")
        .bind(device)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get("username")?),
        None => None,
    })
}

impl Store for SqliteStore {
    async fn register_device(
        &self,
        registration: &Registration<'_>,
        admission: &Admission<'_>,
    ) -> Result<(), StoreError> {
        admission::register_device(&self.writer, registration, admission).await
    }

    async fn create_invite(
        &self,
        token_hash: &str,
        username: Option<&str>,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        admission::create_invite(&self.writer, token_hash, username, expires_at).await
    }

    async fn count_one_time_keys(&self, device: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM one_time_keys WHERE device_id = ?")
            .bind(device)
            .fetch_one(&self.reader)
            .await?
            .try_get("n")?;
        Ok(to_u64(n))
    }

    async fn list_devices(&self, username: &str) -> Result<Vec<DeviceKeys>, StoreError> {
        admission::list_devices(&self.reader, username).await
    }

    async fn device(&self, device: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT d.device_id, d.username, d.identity_key, d.signing_key, q.last_acked_seq \
             FROM devices d JOIN queues q ON q.device_no = d.device_no WHERE d.device_id = ?",
        )
        .bind(device)
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(DeviceRecord {
            device: row.try_get("device_id")?,
            username: row.try_get("username")?,
            identity_key: row.try_get("identity_key")?,
            signing_key: row.try_get("signing_key")?,
            last_acked_seq: to_u64(row.try_get("last_acked_seq")?),
        }))
    }

    async fn publish_prekeys(
        &self,
        device: &str,
        one_time: &[PreKey],
        fallback: Option<&PreKey>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        if device_user(&mut tx, device).await?.is_none() {
            return Err(StoreError::UnknownDevice {
                device: device.to_owned(),
            });
        }
        for key in one_time {
            sqlx::query(
                "INSERT INTO one_time_keys (device_id, key_id, public_key) VALUES (?, ?, ?) \
                 ON CONFLICT (device_id, key_id) DO NOTHING",
            )
            .bind(device)
            .bind(&key.key_id)
            .bind(&key.key)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(key) = fallback {
            sqlx::query(
                "INSERT INTO fallback_keys (device_id, key_id, public_key) VALUES (?, ?, ?) \
                 ON CONFLICT (device_id) DO UPDATE SET key_id = excluded.key_id, public_key = excluded.public_key",
            )
            .bind(device)
            .bind(&key.key_id)
            .bind(&key.key)
            .execute(&mut *tx)
            .await?;
        }
        let stored: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM one_time_keys WHERE device_id = ?")
                .bind(device)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        if usize::try_from(stored).unwrap_or(usize::MAX) > super::MAX_STORED_ONE_TIME_KEYS {
            // Dropping the transaction rolls the new keys back.
            return Err(StoreError::TooManyPrekeys {
                limit: super::MAX_STORED_ONE_TIME_KEYS,
            });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn fetch_bundles(&self, username: &str) -> Result<Vec<DeviceBundle>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM accounts WHERE username = ?")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::UnknownUser {
                username: username.to_owned(),
            });
        }
        let rows = sqlx::query(
            "SELECT d.device_id, d.identity_key, d.signing_key, f.key_id AS fb_id, f.public_key AS fb_key \
             FROM devices d LEFT JOIN fallback_keys f ON f.device_id = d.device_id \
             WHERE d.username = ? ORDER BY d.device_id",
        )
        .bind(username)
        .fetch_all(&mut *tx)
        .await?;
        let mut bundles = Vec::with_capacity(rows.len());
        for row in rows {
            let device: String = row.try_get("device_id")?;
            let claimed = sqlx::query(
                "SELECT key_id, public_key FROM one_time_keys WHERE device_id = ? ORDER BY key_id LIMIT 1",
            )
            .bind(&device)
            .fetch_optional(&mut *tx)
            .await?;
            let one_time_key = match claimed {
                Some(key) => {
                    let key = PreKey {
                        key_id: key.try_get("key_id")?,
                        key: key.try_get("public_key")?,
                    };
                    sqlx::query("DELETE FROM one_time_keys WHERE device_id = ? AND key_id = ?")
                        .bind(&device)
                        .bind(&key.key_id)
                        .execute(&mut *tx)
                        .await?;
                    Some(key)
                }
                None => None,
            };
            let fb_id: Option<String> = row.try_get("fb_id")?;
            let fb_key: Option<String> = row.try_get("fb_key")?;
            bundles.push(DeviceBundle {
                device,
                identity_key: row.try_get("identity_key")?,
                signing_key: row.try_get("signing_key")?,
                one_time_key,
                fallback_key: fb_id
                    .zip(fb_key)
                    .map(|(key_id, key)| PreKey { key_id, key }),
            });
        }
        tx.commit().await?;
        Ok(bundles)
    }

    async fn enqueue(
        &self,
        sender: &str,
        message_id: &str,
        to: &str,
        envelopes: &[Envelope],
    ) -> Result<Enqueued, StoreError> {
        self.batch
            .enqueue(sender, message_id, to, envelopes.to_vec())
            .await
    }

    async fn pending(
        &self,
        device: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, sender_user, sender_device, message_id, ciphertext, stored_at FROM messages \
             WHERE recipient_no = (SELECT device_no FROM devices WHERE device_id = ?) AND seq > ? \
             ORDER BY seq LIMIT ?",
        )
        .bind(device)
        .bind(to_i64(after))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(stored_message)
            .collect::<Result<Vec<_>, sqlx::Error>>()?)
    }

    async fn pending_within(
        &self,
        device: &str,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<StoredMessage>, bool), StoreError> {
        Ok(super::pending::pending_within(&self.reader, device, after, limit, max_bytes).await?)
    }

    async fn ack(&self, device: &str, messages: &[MessageRef]) -> Result<u64, StoreError> {
        self.batch.ack(device, messages.to_vec()).await
    }

    async fn remove_device(&self, caller: &str, device: &str) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        let Some(account) = device_user(&mut tx, caller).await? else {
            return Err(StoreError::UnknownDevice {
                device: caller.to_owned(),
            });
        };
        match device_user(&mut tx, device).await? {
            None => return Ok(false),
            Some(owner) if owner != account => {
                return Err(StoreError::NotYourDevice {
                    device: device.to_owned(),
                });
            }
            Some(_) => {}
        }
        // Foreign keys cascade to prekeys, the queue's counters and queued messages.
        sqlx::query("DELETE FROM devices WHERE device_id = ?")
            .bind(device)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn expire(&self, cutoff: i64) -> Result<u64, StoreError> {
        // In transactions of at most EXPIRY_CHUNK rows each, so group commits run between them.
        let mut expired = 0u64;
        loop {
            let (messages, records) = expire_chunk(&self.writer, cutoff).await?;
            expired += messages;
            if messages < EXPIRY_CHUNK && records < EXPIRY_CHUNK {
                break;
            }
        }
        sqlx::query("DELETE FROM invites WHERE expires_at < ?")
            .bind(now())
            .execute(&self.writer)
            .await?;
        Ok(expired)
    }

    async fn visible_users(
        &self,
        device: &str,
    ) -> Result<Vec<(String, Vec<DeviceId>)>, StoreError> {
        let Some(me) = self.device(device).await? else {
            return Err(StoreError::UnknownDevice {
                device: device.to_owned(),
            });
        };
        let rows = sqlx::query(
            "SELECT u.username AS username, d.device_id AS device_id FROM \
             (SELECT ? AS username UNION SELECT contact FROM (SELECT contact FROM contacts \
             WHERE username = ? ORDER BY contact LIMIT ?)) u \
             LEFT JOIN devices d ON d.username = u.username ORDER BY u.username, d.device_id",
        )
        .bind(&me.username)
        .bind(&me.username)
        .bind(i64::try_from(super::MAX_LISTED_CONTACTS).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?;
        let mut users: Vec<(String, Vec<DeviceId>)> = Vec::new();
        for row in rows {
            let username: String = row.try_get("username")?;
            let device: Option<String> = row.try_get("device_id")?;
            if users.last().is_none_or(|(last, _)| *last != username) {
                users.push((username, Vec::new()));
            }
            if let (Some(device), Some((_, devices))) = (device, users.last_mut()) {
                devices.push(device);
            }
        }
        Ok(users)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use sqlx::{Connection, Row, SqliteConnection};

    /// An in-memory database at the current schema, for checking query plans.
    pub(in crate::store) async fn migrated_in_memory() -> SqliteConnection {
        let mut conn = SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("open");
        for migration in super::MIGRATIONS {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*migration))
                .execute(&mut conn)
                .await
                .expect("migrate");
        }
        conn
    }

    /// The steps of `sql`'s query plan (`EXPLAIN QUERY PLAN`), its `binds` parameters bound to 0.
    pub(in crate::store) async fn query_plan(
        conn: &mut SqliteConnection,
        sql: &str,
        binds: usize,
    ) -> Vec<String> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
        for _ in 0..binds {
            query = query.bind(0_i64);
        }
        query
            .fetch_all(conn)
            .await
            .expect("plan")
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect()
    }

    /// Expiry finds what is old through the age indexes (a scan would read every message and every
    /// idempotency record of the TTL, 30 days of sends, while holding the writer).
    #[tokio::test]
    async fn expiry_searches_the_age_indexes() {
        let mut conn = migrated_in_memory().await;
        for (sql, index) in [
            (super::OLDEST_MESSAGES, "messages_by_age"),
            (super::OLDEST_RECORDS_DELETE, "sent_messages_by_age"),
        ] {
            let plan = query_plan(&mut conn, sql, 2).await;
            assert!(
                plan.iter()
                    .any(|step| step.starts_with("SEARCH") && step.contains(index)),
                "{sql}: {plan:?}"
            );
            // Scanning the subquery's own rows is fine; scanning a table is not.
            let scans_table = |step: &String| {
                step.starts_with("SCAN messages") || step.starts_with("SCAN sent_messages")
            };
            assert!(!plan.iter().any(scans_table), "{sql}: {plan:?}");
        }
    }
}
