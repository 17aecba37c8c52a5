//! # tessera-relay
//!
//! An end-to-end encrypted messaging relay for people and AI agents (issue 7), over the Tessera secure
//! channel. The channel handshake is the authentication: a device *is* its channel (Noise static) key,
//! and the relay holds no password or other secret of its users. The relay stores and forwards only
//! what clients give it: public prekeys and per-device ciphertexts.
//!
//! * [`protocol`]: the wire messages, and in [`protocol::codec`] their JSON encoding (`docs/relay.md`).
//! * [`store`]: the durable state behind the [`store::Store`] trait; [`store::SqliteStore`] by default.
//! * [`server`]: one task per channel; queued messages delivered in order on connect, then pushed live;
//!   deleted on acknowledgment.
//! * [`client`]: a minimal client over a channel (request/reply, buffered deliveries).
//! * [`e2e`]: Olm end-to-end encryption (vodozemac) for the client: prekeys, sessions, pins, dedup.
//! * [`chat`]: a device that sends and receives text end to end (client + Olm), for programs and agents.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chat;
pub mod client;
pub mod demo;
pub mod e2e;
pub mod invite;
pub mod limit;
mod metrics;
pub mod protocol;
pub mod server;
pub mod state_file;
pub mod store;
