//! The relay's metrics, through the `metrics` facade (served by `tessera relay serve --admin` at
//! `/metrics`, next to the session runtime's own). Handles are registered once per relay.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tessera_relay_connections` | gauge | — |
//! | `tessera_relay_messages_stored_total` | counter | — (one per stored copy) |
//! | `tessera_relay_deliveries_total` | counter | — (pushed `deliver` frames, redeliveries included) |
//! | `tessera_relay_messages_expired_total` | counter | — (queued copies deleted by expiry) |
//! | `tessera_relay_refused_total` | counter | code (the error reply's code) |
//! | `tessera_relay_closed_total` | counter | reason (peer, idle, malformed, rate_limited) |

use metrics::{Counter, Gauge, counter, gauge};

use crate::protocol::ErrorCode;

/// Why the relay stopped serving a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The peer closed it or the channel failed.
    Peer,
    /// No request within the idle timeout.
    Idle,
    /// Too many consecutive malformed frames.
    Malformed,
    /// Too many consecutive rate-limited requests.
    RateLimited,
    /// Its device was removed from its account (by another of the account's channels).
    Removed,
}

const CODES: [(ErrorCode, &str); 10] = [
    (ErrorCode::Malformed, "malformed"),
    (ErrorCode::NotRegistered, "not_registered"),
    (ErrorCode::UnknownUser, "unknown_user"),
    (ErrorCode::UnknownDevice, "unknown_device"),
    (ErrorCode::DeviceTaken, "device_taken"),
    (ErrorCode::Invalid, "invalid"),
    (ErrorCode::RateLimited, "rate_limited"),
    (ErrorCode::Internal, "internal"),
    (ErrorCode::InviteRequired, "invite_required"),
    (ErrorCode::QueueFull, "queue_full"),
];

/// The relay's metric handles.
pub(crate) struct RelayMetrics {
    connections: Gauge,
    pub(crate) stored: Counter,
    pub(crate) delivered: Counter,
    pub(crate) expired: Counter,
    refused: [Counter; 10],
    closed: [Counter; 5],
}

/// Counts one connection while it lives.
pub(crate) struct Connected(Gauge);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl RelayMetrics {
    pub(crate) fn new() -> Self {
        RelayMetrics {
            connections: gauge!("tessera_relay_connections"),
            stored: counter!("tessera_relay_messages_stored_total"),
            delivered: counter!("tessera_relay_deliveries_total"),
            expired: counter!("tessera_relay_messages_expired_total"),
            refused: CODES.map(|(_, code)| counter!("tessera_relay_refused_total", "code" => code)),
            closed: ["peer", "idle", "malformed", "rate_limited", "removed"]
                .map(|reason| counter!("tessera_relay_closed_total", "reason" => reason)),
        }
    }

    pub(crate) fn connected(&self) -> Connected {
        self.connections.increment(1.0);
        Connected(self.connections.clone())
    }

    pub(crate) fn refused(&self, code: ErrorCode) {
        if let Some(index) = CODES.iter().position(|(c, _)| *c == code) {
            self.refused[index].increment(1);
        }
    }

    pub(crate) fn closed(&self, closed: Closed) {
        let index = match closed {
            Closed::Peer => 0,
            Closed::Idle => 1,
            Closed::Malformed => 2,
            Closed::RateLimited => 3,
            Closed::Removed => 4,
        };
        self.closed[index].increment(1);
    }
}
