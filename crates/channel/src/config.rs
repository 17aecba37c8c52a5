//! Channel configuration: every size, queue and time limit in one place.

use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::frame::{MAX_FRAME, Suite};

/// Limits and timeouts of a channel (both sides). Every queue and size is bounded.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// The whole handshake (client_hello to session_established) must finish within this (default 30 s).
    pub handshake_timeout: Duration,
    /// Largest application message, after reassembly of its fragments (default 1 MiB).
    pub max_message_size: usize,
    /// Largest application auth payload a server accepts in client_auth (default 8 KiB).
    pub max_auth_payload: usize,
    /// Messages queued for the writer task before `send` waits (default 64).
    pub send_queue: usize,
    /// Received messages queued for the reader half before the socket stops being read (default 64).
    pub recv_queue: usize,
    /// WebSocket ping interval; with the session runtime's idle timeout it detects dead peers
    /// (default 15 s; `None` for no pings).
    pub keepalive: Option<Duration>,
    /// Most transport messages per direction (Noise nonces). When a direction reaches it the channel
    /// closes with code 4006 (default `u64::MAX - 1`: Noise forbids the nonce 2^64-1). Lower it only for tests.
    pub max_messages: u64,
    /// How long a closing side waits to deliver its close frame (default 1 s).
    pub close_timeout: Duration,
    /// Server only: established channels waiting for [`crate::Listener::accept`] (default 128); beyond it
    /// new channels are closed with 1013 (try again later).
    pub accept_queue: usize,
    /// WebSocket read buffer per connection (default 8 KiB; tungstenite's default is 128 KiB).
    pub ws_read_buffer: usize,
    /// WebSocket write buffer per connection (default 8 KiB; tungstenite's default is 128 KiB).
    pub ws_write_buffer: usize,
    /// Client only: the protocol version, i.e. the Noise cipher, this side asks for (default
    /// [`Suite::ChaChaPoly`], version 1). A server speaks every version.
    pub suite: Suite,
    /// Which implementation runs the channel's cipher (default [`CipherImpl::Compact`]).
    pub cipher: CipherImpl,
}

/// Which implementation runs the channel's cipher (ChaCha20-Poly1305 or AES-256-GCM, per [`Suite`]). The
/// wire is the same either way, so the two ends choose independently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CipherImpl {
    /// RustCrypto's: 32 bytes of key per direction, in either suite (the cipher state is built for each
    /// message). For servers that hold many mostly idle connections.
    #[default]
    Compact,
    /// ring's assembly: about a quarter less CPU on bulk data, for ~0.9 KB more per direction (ring sizes
    /// every key for its largest algorithm). For channels that carry megabytes.
    Fast,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            handshake_timeout: Duration::from_secs(30),
            max_message_size: 1024 * 1024,
            max_auth_payload: 8 * 1024,
            send_queue: 64,
            recv_queue: 64,
            keepalive: Some(Duration::from_secs(15)),
            max_messages: u64::MAX - 1,
            close_timeout: Duration::from_secs(1),
            accept_queue: 128,
            ws_read_buffer: 8 * 1024,
            ws_write_buffer: 8 * 1024,
            suite: Suite::ChaChaPoly,
            cipher: CipherImpl::Compact,
        }
    }
}

impl ChannelConfig {
    /// The tungstenite configuration: small buffers, and no WebSocket message or frame larger than our
    /// largest frame.
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.ws_read_buffer)
            .write_buffer_size(self.ws_write_buffer)
            .max_write_buffer_size(self.ws_write_buffer + 2 * MAX_FRAME)
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME))
    }
}
