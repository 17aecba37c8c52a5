//! Invite and device-link tokens: 128 random bits in hex, stored by the relay only as their SHA-256.
//!
//! * An **invite** (not bound to an account) lets one new account register on an invite-only relay. The
//!   operator mints it offline with `tessera relay invite --data DIR` ([`mint_invite`]), which writes to
//!   the relay's database directly (SQLite lets the running relay and this command share the file).
//! * A **device-link token** (bound to an account) lets one new device join that account; a device of
//!   the account asks the relay for one with link_device.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::store::{Store, StoreError};

/// A fresh token and its hash: `(token, sha256 hex)`. The token is shown once and never stored.
pub fn new_token() -> (Zeroizing<String>, String) {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    let token = Zeroizing::new(hex::encode(bytes));
    let hash = token_hash(&token);
    (token, hash)
}

/// The stored form of a token: SHA-256 of its text, in hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Mints an invite for one new account, valid for `valid_for`; returns the token and its expiry time
/// (seconds since the Unix epoch).
pub async fn mint_invite<S: Store>(
    store: &S,
    valid_for: std::time::Duration,
) -> Result<(Zeroizing<String>, i64), StoreError> {
    mint(store, None, valid_for).await
}

/// Mints a token bound to `username` (a device-link token) or unbound (an invite).
pub(crate) async fn mint<S: Store>(
    store: &S,
    username: Option<&str>,
    valid_for: std::time::Duration,
) -> Result<(Zeroizing<String>, i64), StoreError> {
    let (token, hash) = new_token();
    let seconds = i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX);
    let expires_at = unix_now().saturating_add(seconds);
    store.create_invite(&hash, username, expires_at).await?;
    Ok((token, expires_at))
}
