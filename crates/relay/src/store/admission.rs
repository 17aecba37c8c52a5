//! Who may register (SQLite backend): the registration policy, invite tokens and device-link tokens.
//!
//! Rules, applied in one transaction with the registration itself:
//! * a device already bound to the account just updates its keys (no token needed);
//! * a new device of an account that has devices needs a **device-link token** minted for that account
//!   by one of its devices (link_device) — otherwise anyone could add a device to someone else's account
//!   and receive copies of what is sent to it;
//! * a new account (or an account left with no device) needs an **invite token** (not bound to an
//!   account) when the relay is invite-only, and nothing when it is open.
//!
//! An account has at most [`MAX_DEVICES_PER_ACCOUNT`](super::MAX_DEVICES_PER_ACCOUNT) devices.
//!
//! Tokens are single use: the relay stores only their SHA-256 (hex) and deletes the row when it is used,
//! in the same transaction as the registration. Expired tokens are refused and swept by `expire`.

use sqlx::{Row, SqlitePool};

use super::sqlite::{device_user, now};
use super::{Admission, Registration, StoreError};
use crate::protocol::DeviceKeys;

/// Registers a device under the admission rules (see the module docs).
pub(super) async fn register_device(
    pool: &SqlitePool,
    registration: &Registration<'_>,
    admission: &Admission<'_>,
) -> Result<(), StoreError> {
    let Registration {
        username,
        device,
        identity_key,
        signing_key,
    } = *registration;
    let mut tx = pool.begin().await?;
    let now = now();
    let known = device_user(&mut tx, device).await?;
    match &known {
        Some(owner) if owner != username => {
            return Err(StoreError::DeviceTaken {
                device: device.to_owned(),
            });
        }
        Some(_) => {}
        None => {
            let devices: i64 = sqlx::query("SELECT COUNT(*) AS n FROM devices WHERE username = ?")
                .bind(username)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            if usize::try_from(devices).unwrap_or(usize::MAX) >= super::MAX_DEVICES_PER_ACCOUNT {
                return Err(StoreError::TooManyDevices {
                    username: username.to_owned(),
                    limit: super::MAX_DEVICES_PER_ACCOUNT,
                });
            }
            // A new device of a living account needs that account's link token; a new account needs an
            // unbound invite when the relay is invite-only.
            let needed = if devices > 0 {
                Some(Some(username))
            } else if admission.invite_only {
                Some(None)
            } else {
                None
            };
            if let Some(bound_to) = needed {
                let Some(hash) = admission.token_hash else {
                    return Err(StoreError::InviteRequired {
                        reason: refusal(bound_to),
                    });
                };
                let used = sqlx::query(
                    "DELETE FROM invites WHERE token_hash = ? AND username IS ? AND expires_at > ?",
                )
                .bind(hash)
                .bind(bound_to)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if used == 0 {
                    return Err(StoreError::InviteRequired {
                        reason: format!("{} (unknown, used or expired token)", refusal(bound_to)),
                    });
                }
            }
        }
    }
    sqlx::query(
        "INSERT INTO accounts (username, created_at) VALUES (?, ?) ON CONFLICT (username) DO NOTHING",
    )
    .bind(username)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if known.is_some() {
        sqlx::query("UPDATE devices SET identity_key = ?, signing_key = ? WHERE device_id = ?")
            .bind(identity_key)
            .bind(signing_key)
            .bind(device)
            .execute(&mut *tx)
            .await?;
    } else {
        // A new device gets a number never issued before (`device_numbers`; a removed device's number
        // is not reused) and its queue's counters.
        let no: i64 = sqlx::query(
            "UPDATE device_numbers SET last_issued = last_issued + 1 RETURNING last_issued",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get("last_issued")?;
        sqlx::query(
            "INSERT INTO devices (device_id, username, identity_key, signing_key, created_at, \
             device_no) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(device)
        .bind(username)
        .bind(identity_key)
        .bind(signing_key)
        .bind(now)
        .bind(no)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO queues (device_no) VALUES (?)")
            .bind(no)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn refusal(bound_to: Option<&str>) -> String {
    match bound_to {
        Some(user) => {
            format!("{user} already has devices: a new device needs a link token from one of them")
        }
        None => "this relay is invite-only: a new account needs an invite token".to_owned(),
    }
}

/// Stores a token's hash: an invite (`username` None) or a device-link token for `username`. An account
/// keeps at most [`MAX_LINK_TOKENS_PER_ACCOUNT`](super::MAX_LINK_TOKENS_PER_ACCOUNT) unexpired link
/// tokens: a new one replaces the oldest.
pub(super) async fn create_invite(
    pool: &SqlitePool,
    token_hash: &str,
    username: Option<&str>,
    expires_at: i64,
) -> Result<(), StoreError> {
    let now = now();
    let mut tx = pool.begin().await?;
    if let Some(username) = username {
        // Room for the new link token: the account's expired ones go, and the oldest beyond the cap.
        let keep = super::MAX_LINK_TOKENS_PER_ACCOUNT.saturating_sub(1);
        sqlx::query(
            "DELETE FROM invites WHERE username = ? AND (expires_at <= ? OR token_hash IN \
             (SELECT token_hash FROM invites WHERE username = ? AND expires_at > ? \
             ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?))",
        )
        .bind(username)
        .bind(now)
        .bind(username)
        .bind(now)
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO invites (token_hash, username, created_at, expires_at) VALUES (?, ?, ?, ?)",
    )
    .bind(token_hash)
    .bind(username)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A user's devices with their public identity keys; claims nothing.
pub(super) async fn list_devices(
    pool: &SqlitePool,
    username: &str,
) -> Result<Vec<DeviceKeys>, StoreError> {
    let exists = sqlx::query("SELECT 1 FROM accounts WHERE username = ?")
        .bind(username)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Err(StoreError::UnknownUser {
            username: username.to_owned(),
        });
    }
    let rows = sqlx::query(
        "SELECT device_id, identity_key, signing_key FROM devices WHERE username = ? ORDER BY device_id",
    )
    .bind(username)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(DeviceKeys {
                device: row.try_get("device_id")?,
                identity_key: row.try_get("identity_key")?,
                signing_key: row.try_get("signing_key")?,
            })
        })
        .collect()
}
