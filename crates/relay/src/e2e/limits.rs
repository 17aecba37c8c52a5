//! The bounds on a device's Olm state, so that its sealed form (rewritten on every message) stays far
//! below [`crate::state_file::MAX_STATE_FILE`] whatever peers and the relay do:
//!
//! * [`MAX_SESSIONS_PER_DEVICE`] sessions per peer device, the least recently used dropped first (as
//!   libolm does). A peer can open a new session from the fallback key with every message; only the
//!   recent ones are of use.
//! * [`MAX_PEER_DEVICES`] peer devices with a pin or sessions, the least recently used forgotten first
//!   (pin and sessions both). A forgotten device is pinned again at its next contact (trust on first use
//!   again): the price of a bound that anyone able to register devices could otherwise push.
//! * [`MAX_INBOUND_PER_IDENTITY`] inbound session ids per sender identity key, for
//!   [`MAX_INBOUND_IDENTITIES`] identity keys (least recently used forgotten first): the replay guard
//!   for pre-key messages (`Inbound`), which must outlive the sessions themselves.
//!
//! Worst case about 5 × 2,000 sessions × 1.2 KB + 100 × 2,000 ids × 50 bytes + the dedup window
//! (1 MB): about 23 MB sealed.

use std::collections::{HashMap, VecDeque};

/// Sessions kept per peer device.
pub const MAX_SESSIONS_PER_DEVICE: usize = 5;
/// Peer devices kept (pins and sessions).
pub const MAX_PEER_DEVICES: usize = 2_000;
/// Inbound session ids remembered per sender identity key.
pub const MAX_INBOUND_PER_IDENTITY: usize = 100;
/// Sender identity keys whose inbound session ids are remembered.
pub const MAX_INBOUND_IDENTITIES: usize = 2_000;

/// The ids of the inbound sessions created from pre-key messages, per sender identity key (base64),
/// whatever device id the relay named: a pre-key message whose session was created before is a replay,
/// under any device id and any message id.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    by_identity: HashMap<String, (u64, VecDeque<String>)>,
    tick: u64,
}

impl Inbound {
    /// Whether a session `session_id` from `identity` was created before.
    pub(crate) fn contains(&self, identity: &str, session_id: &str) -> bool {
        self.by_identity
            .get(identity)
            .is_some_and(|(_, ids)| ids.iter().any(|id| id == session_id))
    }

    /// Records a session, forgetting the oldest ids beyond the bounds.
    pub(crate) fn insert(&mut self, identity: &str, session_id: &str) {
        self.tick += 1;
        let entry = self
            .by_identity
            .entry(identity.to_owned())
            .or_insert_with(|| (0, VecDeque::new()));
        entry.0 = self.tick;
        if !entry.1.iter().any(|id| id == session_id) {
            entry.1.push_back(session_id.to_owned());
        }
        while entry.1.len() > MAX_INBOUND_PER_IDENTITY {
            entry.1.pop_front();
        }
        let excess = self
            .by_identity
            .len()
            .saturating_sub(MAX_INBOUND_IDENTITIES);
        for key in least_recent(self.by_identity.iter().map(|(k, (t, _))| (k, *t)), excess) {
            self.by_identity.remove(&key);
        }
    }

    /// The records, least recently used identity first (for sealing; inserting them back in this order
    /// restores the order).
    pub(crate) fn export(&self) -> Vec<(String, Vec<String>)> {
        let mut all: Vec<_> = self.by_identity.iter().collect();
        all.sort_by_key(|(_, (tick, _))| *tick);
        all.into_iter()
            .map(|(key, (_, ids))| (key.clone(), ids.iter().cloned().collect()))
            .collect()
    }
}

/// The `count` keys with the smallest use counters.
pub(crate) fn least_recent<'a>(
    entries: impl Iterator<Item = (&'a String, u64)>,
    count: usize,
) -> Vec<String> {
    if count == 0 {
        return Vec::new();
    }
    let mut all: Vec<_> = entries.collect();
    all.sort_by_key(|(_, tick)| *tick);
    all.into_iter()
        .take(count)
        .map(|(key, _)| key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_ids_are_bounded_per_identity_and_in_identities() {
        let mut inbound = Inbound::default();
        for n in 0..=MAX_INBOUND_PER_IDENTITY {
            inbound.insert("k", &n.to_string());
        }
        assert!(!inbound.contains("k", "0"), "the oldest id is forgotten");
        assert!(inbound.contains("k", &MAX_INBOUND_PER_IDENTITY.to_string()));
        for n in 0..MAX_INBOUND_IDENTITIES {
            inbound.insert(&format!("other{n}"), "s");
        }
        assert_eq!(inbound.by_identity.len(), MAX_INBOUND_IDENTITIES);
        assert!(
            !inbound.contains("k", "1"),
            "the least recent identity is forgotten"
        );
        assert!(inbound.contains("other0", "s"));
    }
}
