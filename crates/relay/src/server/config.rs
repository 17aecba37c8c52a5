//! The relay's limits and policies.

/// Limits the relay enforces on requests.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Queued messages read from the store per delivery batch (default 100).
    pub delivery_batch: u32,
    /// Most ciphertext bytes per delivery batch (default 4 MiB; a batch always holds at least one
    /// message): what a connection holds while it waits on a peer that does not read.
    pub delivery_batch_bytes: usize,
    /// Most connections open at once per device (default 8); one more is answered with an error
    /// (`rate_limited`, `req` null) and closed.
    pub max_connections_per_device: usize,
    /// Longest username, in bytes (default 64).
    pub max_username: usize,
    /// Longest key, key id or message id, in bytes (default 256).
    pub max_field: usize,
    /// Most envelopes in one send (default 64).
    pub max_envelopes: usize,
    /// Most one-time prekeys in one publish (default 100).
    pub max_prekeys: usize,
    /// Consecutive malformed frames after which the relay closes the channel (default 8); each one
    /// before that gets an error reply.
    pub max_malformed: u32,
    /// Requests per second a connection may sustain (default 50).
    pub requests_per_second: f64,
    /// Requests a connection may send at once before the rate applies (default 100).
    pub request_burst: u32,
    /// Most messages acknowledged in one ack (default 1,000).
    pub max_acks: usize,
    /// How long an undelivered message is kept, and how long a message id is remembered for idempotent
    /// retries (default 30 days). Applied by [`Relay::expire`](crate::server::Relay::expire).
    pub message_ttl: std::time::Duration,
    /// Registration policy: when true a new account needs an invite token (see [`crate::invite`]);
    /// when false (default) anyone may create an account. A new device of an existing account always
    /// needs a link token from one of its devices.
    pub invite_only: bool,
    /// How long a device-link token stays valid (default 10 minutes).
    pub link_ttl: std::time::Duration,
    /// A connection that sends no request (a `ping` counts) for this long is closed (default 120 s).
    /// Clients that only listen send `ping` well within it.
    pub idle_timeout: std::time::Duration,
    /// Consecutive `rate_limited` replies after which the relay closes the connection (default 32).
    pub max_rate_limited: u32,
    /// Largest frame the relay sends, in bytes (default 1 MiB, the channel's
    /// `ChannelConfig::max_message_size`; it must not exceed the listener's). A `send` is refused
    /// (`invalid`) when the `deliver` of any of its envelopes could be larger, header fields at their
    /// largest included (see `server::size`): such a copy could never be delivered.
    pub max_frame: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            delivery_batch: 100,
            delivery_batch_bytes: 4 * 1024 * 1024,
            max_connections_per_device: 8,
            max_username: 64,
            max_field: 256,
            max_envelopes: 64,
            max_prekeys: 100,
            max_acks: 1000,
            max_malformed: 8,
            requests_per_second: 50.0,
            request_burst: 100,
            message_ttl: std::time::Duration::from_secs(30 * 24 * 3600),
            invite_only: false,
            link_ttl: std::time::Duration::from_secs(600),
            idle_timeout: std::time::Duration::from_secs(120),
            max_rate_limited: 32,
            max_frame: 1024 * 1024,
        }
    }
}
