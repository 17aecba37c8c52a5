//! Frame metadata and session tags: what rules and recordings match on.

use std::sync::{Arc, PoisonError};

use tessera_session::SessionId;

/// Session tags, computed from what the session did (never guessed): a small set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tags(u8);

impl Tags {
    /// Older than [`McpConfig::long_running_after`](crate::McpConfig::long_running_after).
    pub const LONG_RUNNING: Tags = Tags(1);
    /// More than [`McpConfig::high_volume_frames`](crate::McpConfig::high_volume_frames) frames.
    pub const HIGH_VOLUME: Tags = Tags(2);
    /// The client presented credentials (an `Authorization` header).
    pub const AUTHENTICATED: Tags = Tags(4);
    /// At least [`McpConfig::error_prone_ratio`](crate::McpConfig::error_prone_ratio) of its responses were errors.
    pub const ERROR_PRONE: Tags = Tags(8);
    const NAMES: [(Tags, &'static str); 4] = [
        (Tags::LONG_RUNNING, "long-running"),
        (Tags::HIGH_VOLUME, "high-volume"),
        (Tags::AUTHENTICATED, "authenticated"),
        (Tags::ERROR_PRONE, "error-prone"),
    ];

    /// True if every tag of `other` is set.
    pub fn contains(self, other: Tags) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if no tag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names of the tags that are set.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Tags::NAMES
            .into_iter()
            .filter(move |(t, _)| self.contains(*t))
            .map(|(_, n)| n)
    }
}

impl std::ops::BitOr for Tags {
    type Output = Tags;
    fn bitor(self, rhs: Tags) -> Tags {
        Tags(self.0 | rhs.0)
    }
}

/// The metadata of one frame, for logs, recordings and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameMeta {
    /// The session the transport says the frame came on.
    pub session: SessionId,
    /// This frame's number in its session, from 1.
    pub frame_count: u64,
    /// The session's age when the frame passed.
    pub session_duration_ms: u64,
    /// The session's tags at that moment.
    pub tags: Tags,
    /// Tags interception rules had added to the session by then.
    pub labels: Vec<std::sync::Arc<str>>,
}

/// Tags added by interception rules ([`crate::rules`]), kept with the session's counters.
impl super::McpSession {
    /// Tags that interception rules added to the session.
    pub fn labels(&self) -> Vec<Arc<str>> {
        self.stats
            .labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds a rule's tag (ignored past [`super::MAX_LABELS`] or when already set).
    pub fn add_label(&self, label: &Arc<str>) {
        let mut labels = self
            .stats
            .labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if labels.len() < super::MAX_LABELS && !labels.contains(label) {
            labels.push(label.clone());
        }
    }

    /// True if the session has this tag, computed or added by a rule.
    pub fn has_tag(&self, name: &str) -> bool {
        self.tags().names().any(|n| n == name)
            || self
                .stats
                .labels
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|l| &**l == name)
    }
}
