//! # tessera-channel
//!
//! A mutually authenticated, encrypted channel over WebSocket, on the Noise protocol
//! `Noise_XX_25519_ChaChaPoly_SHA256`. A peer's identity is its Noise static key.
//!
//! ```text
//! client_hello        -> e                    (protocol version, client nonce)
//! server_hello        <- e, ee, s, es         (server nonce)            client checks its pin here
//! client_auth         -> s, se                (application auth payload) server policy decides here
//! session_established <- transport message    (session id, expiry, welcome payload)
//! data                <-> transport messages
//! ```
//!
//! * [`Listener`] accepts connections (an axum route, an upgraded axum `WebSocket`, or [`serve`]) and
//!   yields [`Channel`]s with the client's proven identity. A [`ClientPolicy`] admits clients.
//! * [`connect`] (or [`Connector`]) opens a channel to a server pinned with a [`ServerTrust`].
//! * A [`Channel`] splits into a [`ChannelReader`] and a [`ChannelWriter`] usable from different tasks; one
//!   writer task underneath owns the socket's write half and the send nonce.
//! * Every connection is a session of the `tessera-session` runtime: created by
//!   [`tessera_session::Registry::create`], its tasks spawned with [`tessera_session::Session::spawn`],
//!   ended (and counted) exactly once.
//!
//! The wire format is specified in `docs/channel.md`; the handshake states are in [`handshake`], the
//! codec in [`frame`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cipher;
mod config;
mod connect;
mod echo;
mod error;
pub mod frame;
pub mod handshake;
mod identity;
mod known_hosts;
mod listener;
mod policy;
mod transport;
mod ws;

pub use config::{ChannelConfig, CipherImpl};
pub use connect::{Connector, connect};
pub use echo::{echo, echo_channel};
pub use error::{ChannelError, close_code};
pub use frame::Suite;
pub use handshake::HandshakeInfo;
pub use identity::{Identity, IdentityError, ParseKeyError, PublicKey};
pub use known_hosts::{KnownHosts, KnownHostsError, Trust};
pub use listener::{Listener, Server, Serving, serve};
pub use policy::{Admission, AdmissionRequest, AllowList, AnyKey, ClientPolicy, ServerTrust};
pub use transport::{Channel, ChannelReader, ChannelWriter};
