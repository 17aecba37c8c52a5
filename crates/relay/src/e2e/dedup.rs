//! The bounded dedup window: the ids of the last [`DEDUP_WINDOW`] messages delivered to the application,
//! oldest forgotten first.
//!
//! Why a count and not a time: the relay redelivers only what was not acknowledged, and a client
//! acknowledges right after it persists, so a redelivery is always among the most recent messages. A
//! replay older than the window is still stopped for pre-key messages by the session check in
//! [`super::OlmDevice::decrypt`] (a pre-key message for a session this device already has is never
//! turned into a new session), and an ordinary Olm message replayed fails to decrypt (its message key
//! was used up).

use std::collections::{HashSet, VecDeque};

use crate::protocol::DeviceId;

/// How many delivered message ids a device remembers (10,000: at 100 bytes each about 1 MB of state).
pub const DEDUP_WINDOW: usize = 10_000;

/// `(sender device, message id)` pairs, in arrival order, at most `capacity` of them.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    order: VecDeque<(DeviceId, String)>,
    set: HashSet<(DeviceId, String)>,
    capacity: usize,
}

impl Default for Seen {
    fn default() -> Self {
        Seen::with_capacity(DEDUP_WINDOW)
    }
}

impl Seen {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Seen {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn contains(&self, id: &(DeviceId, String)) -> bool {
        self.set.contains(id)
    }

    /// Records `id`, forgetting the oldest ones beyond the capacity.
    pub(crate) fn insert(&mut self, id: (DeviceId, String)) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// The ids, oldest first (for sealing).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(DeviceId, String)> {
        self.order.iter()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_forgets_the_oldest_first() {
        let mut seen = Seen::with_capacity(3);
        let id = |n: u32| ("d".to_owned(), n.to_string());
        for n in 0..5 {
            seen.insert(id(n));
        }
        seen.insert(id(4));
        assert_eq!(seen.len(), 3);
        assert!(!seen.contains(&id(0)) && !seen.contains(&id(1)));
        assert!((2..5).all(|n| seen.contains(&id(n))));
        let order: Vec<_> = seen.iter().map(|(_, m)| m.clone()).collect();
        assert_eq!(order, ["2", "3", "4"]);
    }
}
