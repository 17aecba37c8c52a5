//! The error vocabulary of the channel, and the WebSocket close codes it maps to.

use thiserror::Error;

use crate::frame::FrameError;
use crate::identity::{IdentityError, PublicKey};
use crate::known_hosts::KnownHostsError;

/// WebSocket close codes used by the channel (RFC 6455 section 7.4; 4000–4999 are private-use codes).
/// Every close carries one of these and a short UTF-8 reason.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// An internal error on the closing side.
    pub const INTERNAL: u16 = 1011;
    /// The server is at its session limit; try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Malformed, unexpected, duplicate or out-of-order frame.
    pub const PROTOCOL: u16 = 4000;
    /// A handshake or transport message failed to decrypt or authenticate.
    pub const DECRYPT: u16 = 4001;
    /// A frame or message exceeds a size limit.
    pub const TOO_LARGE: u16 = 4002;
    /// The client's protocol version is not supported.
    pub const UNSUPPORTED_VERSION: u16 = 4003;
    /// The peer's identity was refused (server policy, or the client's pin).
    pub const REJECTED: u16 = 4004;
    /// The handshake did not finish within the timeout.
    pub const HANDSHAKE_TIMEOUT: u16 = 4005;
    /// A direction used up its message counter (Noise nonce).
    pub const NONCE_EXHAUSTED: u16 = 4006;
}

/// Everything that can go wrong on a channel. [`ChannelError::close_code`] gives the WebSocket close code
/// the channel sends when the error ends it.
#[derive(Debug, Error)]
pub enum ChannelError {
    /// A frame was malformed, or arrived where the protocol does not allow it.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A frame's bytes do not decode.
    #[error("protocol error: {0}")]
    Frame(#[from] FrameError),
    /// A Noise message failed to decrypt (tampered, replayed, or from another handshake).
    #[error("{0} failed to decrypt or authenticate")]
    Decrypt(&'static str),
    /// A message exceeds a limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The client speaks a protocol version we do not.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// The server presented a different key than the pinned one.
    #[error("server key mismatch: pinned {expected}, presented {presented}")]
    ServerKeyMismatch {
        /// The pinned key.
        expected: PublicKey,
        /// The key the server proved.
        presented: PublicKey,
    },
    /// The known-hosts check failed (a changed key, or the file).
    #[error(transparent)]
    KnownHosts(#[from] KnownHostsError),
    /// The server's policy refused this client.
    #[error("client rejected: {0}")]
    Rejected(String),
    /// The handshake did not finish in time.
    #[error("handshake did not finish within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// A direction's message counter is used up; the channel must be re-established.
    #[error("message counter exhausted; reconnect to continue")]
    NonceExhausted,
    /// The peer closed the connection with a code and reason.
    #[error("peer closed the connection: {code} {reason}")]
    PeerClosed {
        /// The close code.
        code: u16,
        /// The reason text.
        reason: String,
    },
    /// We closed the channel after an error (a bad frame from the peer, a limit); code and reason as sent.
    #[error("channel closed with {code}: {reason}")]
    Aborted {
        /// The close code we sent.
        code: u16,
        /// The reason we sent.
        reason: String,
    },
    /// The connection ended without a close frame, or the WebSocket layer failed.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The channel is closed (locally, or its session ended).
    #[error("the channel is closed")]
    Closed,
    /// The channel's session ended before the channel did.
    #[error("the session ended: {0}")]
    SessionEnded(String),
    /// The session runtime refused (limits, shutdown).
    #[error(transparent)]
    Session(#[from] tessera_session::SessionError),
    /// A key file problem.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Noise refused an operation that should not fail (a bug, or misuse).
    #[error("noise: {0}")]
    Noise(String),
}

impl ChannelError {
    /// The WebSocket close code this error closes the connection with.
    pub fn close_code(&self) -> u16 {
        use close_code::*;
        match self {
            ChannelError::Protocol(_) | ChannelError::Frame(_) => PROTOCOL,
            ChannelError::Decrypt(_) => DECRYPT,
            ChannelError::TooLarge { .. } => TOO_LARGE,
            ChannelError::UnsupportedVersion(_) => UNSUPPORTED_VERSION,
            ChannelError::ServerKeyMismatch { .. }
            | ChannelError::KnownHosts(_)
            | ChannelError::Rejected(_) => REJECTED,
            ChannelError::HandshakeTimeout(_) => HANDSHAKE_TIMEOUT,
            ChannelError::NonceExhausted => NONCE_EXHAUSTED,
            ChannelError::Session(tessera_session::SessionError::TooManySessions { .. }) => {
                TRY_AGAIN_LATER
            }
            ChannelError::Session(tessera_session::SessionError::RegistryShuttingDown) => {
                GOING_AWAY
            }
            ChannelError::Aborted { code, .. } => *code,
            ChannelError::PeerClosed { .. } | ChannelError::Closed => NORMAL,
            _ => INTERNAL,
        }
    }

    /// The close reason sent to the peer: short (a close frame holds at most 123 bytes of reason) and
    /// free of local detail such as file paths.
    pub fn close_reason(&self) -> String {
        let text = match self {
            ChannelError::KnownHosts(_) | ChannelError::ServerKeyMismatch { .. } => {
                "server key not trusted".to_owned()
            }
            ChannelError::Identity(_) | ChannelError::Noise(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        truncate(text, 123)
    }

    pub(crate) fn noise(e: snow::Error) -> Self {
        ChannelError::Noise(e.to_string())
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = ChannelError::Rejected("é".repeat(200));
        let reason = long.close_reason();
        assert!(reason.len() <= 123);
        assert_eq!(long.close_code(), close_code::REJECTED);
        assert_eq!(
            ChannelError::Decrypt("client_auth").close_code(),
            close_code::DECRYPT
        );
    }
}
