//! The handshake as typed states, one file per message (sans-IO: bytes in, bytes out).
//!
//! ```text
//! client                                                    server
//! client_hello::start ──client_hello (-> e)──────────────► ExpectClientHello
//! ExpectServerHello   ◄─server_hello (<- e, ee, s, es)──── (client_hello.rs)
//! (server_hello.rs: pin check) ──client_auth (-> s, se)──► ExpectClientAuth (client_auth.rs)
//!                                                          policy decides, then ClientAuthenticated::establish
//! ExpectSessionEstablished ◄──session_established─────────  (first transport message)
//! (session_established.rs) ──► Established ◄───────────────► Established
//! ```
//!
//! Each state's `handle` consumes `self` and returns the next state: a duplicate or out-of-order message
//! has no state that accepts it, and a failed step leaves nothing behind (the state is gone with the error).
//! The driver (`listener.rs`, `connect.rs`) only moves frames between a socket and these states, under
//! one timeout.

pub mod client_auth;
pub mod client_hello;
mod noise;
mod resolver;
pub mod server_hello;
pub mod session_established;

pub use client_auth::{ClientAuthenticated, ExpectClientAuth};
pub use client_hello::ExpectClientHello;
pub use server_hello::ExpectServerHello;
pub use session_established::ExpectSessionEstablished;

use snow::{Builder, HandshakeState};

use noise::NoiseState;
use zeroize::Zeroizing;

use crate::cipher::TransportKey;
use crate::config::CipherImpl;

use crate::error::ChannelError;
use crate::frame::{self, Frame, FrameKind, Suite};
use crate::identity::{Identity, PublicKey};

/// A finished handshake: the transport keys, the peer's proven identity, and what session_established
/// carried. Turned into a [`crate::Channel`] by the driver.
pub struct Established {
    pub(crate) send: TransportKey,
    pub(crate) recv: TransportKey,
    pub(crate) send_nonce: u64,
    pub(crate) recv_nonce: u64,
    pub(crate) info: HandshakeInfo,
}

impl std::fmt::Debug for Established {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established")
            .field("info", &self.info)
            .field("send_nonce", &self.send_nonce)
            .field("recv_nonce", &self.recv_nonce)
            .finish_non_exhaustive()
    }
}

/// What both sides learn from the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// The peer's identity, proven by the handshake.
    pub peer: PublicKey,
    /// The Noise handshake hash (32 bytes): the channel-binding value, equal on both ends.
    pub channel_binding: [u8; 32],
    /// The server's session id, from session_established.
    pub session_id: [u8; 16],
    /// Session expiry in seconds since the Unix epoch (0: none), from session_established.
    pub expires_at: u64,
    /// The peer's application payload: client_auth's auth payload on the server, session_established's
    /// welcome payload on the client.
    pub peer_payload: Vec<u8>,
    /// The protocol version (Noise cipher) the client chose.
    pub suite: Suite,
}

impl Established {
    /// The handshake's results.
    pub fn info(&self) -> &HandshakeInfo {
        &self.info
    }

    /// Encrypts one transport plaintext (type byte included) into a frame, using the next send nonce.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let frame = seal(&self.send, self.send_nonce, plaintext)?;
        self.send_nonce += 1;
        Ok(frame)
    }

    /// Decrypts one transport frame with the next receive nonce into `out` (at least the frame's length
    /// less one: it holds the ciphertext and tag while they are decrypted in place); returns the plaintext
    /// length.
    pub fn open(&mut self, bytes: &[u8], out: &mut [u8]) -> Result<usize, ChannelError> {
        let n = open(&self.recv, self.recv_nonce, bytes, out)?;
        self.recv_nonce += 1;
        Ok(n)
    }
}

/// Encrypts a transport plaintext under `nonce` into a complete frame (kind byte included).
pub(crate) fn seal(
    key: &TransportKey,
    nonce: u64,
    plaintext: &[u8],
) -> Result<Vec<u8>, ChannelError> {
    // Checked before the copy, so that a refused plaintext leaves no copy behind.
    if plaintext.len() > frame::MAX_PLAINTEXT {
        return Err(ChannelError::TooLarge {
            size: plaintext.len(),
            limit: frame::MAX_PLAINTEXT,
        });
    }
    let mut out = Vec::with_capacity(1 + plaintext.len() + frame::TAG_LEN);
    out.push(FrameKind::Transport as u8);
    out.extend_from_slice(plaintext);
    seal_frame(key, nonce, &mut out)?;
    Ok(out)
}

/// Encrypts a transport frame in place: `frame` holds the kind byte and the plaintext; the plaintext is
/// encrypted where it lies and the tag appended.
pub(crate) fn seal_frame(
    key: &TransportKey,
    nonce: u64,
    frame: &mut Vec<u8>,
) -> Result<(), ChannelError> {
    let size = frame.len().saturating_sub(1);
    if size > frame::MAX_PLAINTEXT {
        return Err(ChannelError::TooLarge {
            size,
            limit: frame::MAX_PLAINTEXT,
        });
    }
    key.seal_in_place(nonce, frame, 1)
}

/// Decrypts a transport frame under `nonce` into `out` (at least the frame's length less one); returns
/// the plaintext length.
pub(crate) fn open(
    key: &TransportKey,
    nonce: u64,
    bytes: &[u8],
    out: &mut [u8],
) -> Result<usize, ChannelError> {
    let frame = expect(bytes, FrameKind::Transport, "a transport message")?;
    let out = out
        .get_mut(..frame.noise.len())
        .ok_or(ChannelError::Protocol(
            "transport message larger than its buffer".into(),
        ))?;
    out.copy_from_slice(frame.noise);
    key.open_in_place(nonce, out)
        .map_err(|()| ChannelError::Decrypt("transport message"))
}

/// The Noise message of a transport frame (ciphertext and tag), or why the bytes are not one.
pub(crate) fn transport_body(bytes: &[u8]) -> Result<&[u8], ChannelError> {
    Ok(expect(bytes, FrameKind::Transport, "a transport message")?.noise)
}

/// The two transport keys of a finished handshake, (send, receive) for this side: Noise's `Split()`, the
/// first key the initiator's (the client's) sending key.
/// The Noise state is consumed: dropped here, it is overwritten in place ([`noise`]).
fn transport_keys(
    mut hs: NoiseState,
    suite: Suite,
    cipher: CipherImpl,
) -> Result<(TransportKey, TransportKey), ChannelError> {
    if !hs.is_handshake_finished() {
        return Err(ChannelError::Noise("handshake not finished".into()));
    }
    let initiator = hs.is_initiator();
    let (first, second) = hs.dangerously_get_raw_split();
    let (first, second) = (Zeroizing::new(first), Zeroizing::new(second));
    let first = TransportKey::new(suite, cipher, &first);
    let second = TransportKey::new(suite, cipher, &second);
    Ok(if initiator {
        (first, second)
    } else {
        (second, first)
    })
}

/// A Noise builder with the parameters and prologue of `suite` and our static key, its cipher (and
/// hash) run by `cipher`, on primitives that wipe their keys when dropped ([`resolver`]).
fn builder(
    identity: &Identity,
    suite: Suite,
    cipher: CipherImpl,
) -> Result<Builder<'_>, ChannelError> {
    let params = suite.noise_params().parse().map_err(ChannelError::noise)?;
    Builder::with_resolver(params, Box::new(resolver::WipingResolver::new(cipher)))
        .local_private_key(identity.expose_private())
        .and_then(|b| b.prologue(suite.prologue()))
        .map_err(ChannelError::noise)
}

/// Decodes a frame and checks that it is the one message this state accepts.
fn expect<'a>(
    bytes: &'a [u8],
    kind: FrameKind,
    state: &'static str,
) -> Result<Frame<'a>, ChannelError> {
    let frame = frame::decode(bytes)?;
    if frame.kind != kind {
        return Err(ChannelError::Protocol(format!(
            "unexpected {} while expecting {state}",
            frame.kind
        )));
    }
    Ok(frame)
}

/// Writes a handshake message with `payload` into a frame of `kind`.
fn write(
    hs: &mut HandshakeState,
    kind: FrameKind,
    payload: &[u8],
) -> Result<Vec<u8>, ChannelError> {
    let mut buf = vec![0u8; frame::MAX_NOISE_MESSAGE];
    let n = hs
        .write_message(payload, &mut buf)
        .map_err(ChannelError::noise)?;
    Ok(frame::encode(kind, &buf[..n]))
}

/// The remote static key, once the handshake has received it.
fn remote_static(hs: &HandshakeState) -> Result<PublicKey, ChannelError> {
    hs.get_remote_static()
        .and_then(PublicKey::from_slice)
        .ok_or_else(|| ChannelError::Noise("remote static key missing".into()))
}

fn handshake_hash(hs: &HandshakeState) -> Result<[u8; 32], ChannelError> {
    hs.get_handshake_hash()
        .try_into()
        .map_err(|_| ChannelError::Noise("unexpected handshake hash length".into()))
}

fn random_nonce() -> [u8; frame::NONCE_LEN] {
    let mut nonce = [0u8; frame::NONCE_LEN];
    rand::fill(&mut nonce);
    nonce
}

#[cfg(test)]
mod tests;
