//! session_established: the server's first transport message, which ends the handshake on the client.
//!
//! It carries the server's session id, the session's expiry and the application's welcome payload. A
//! client that gets it knows the server admitted it; until then the channel is not usable.

use super::{Established, HandshakeInfo, NoiseState, expect, handshake_hash, transport_keys};
use crate::config::CipherImpl;
use crate::error::ChannelError;
use crate::frame::{self, FrameKind, Plaintext, Suite};
use crate::identity::PublicKey;

/// Client: client_auth sent, waiting for session_established.
pub struct ExpectSessionEstablished {
    hs: NoiseState,
    suite: Suite,
    cipher: CipherImpl,
    server: PublicKey,
}

impl ExpectSessionEstablished {
    pub(super) fn new(hs: NoiseState, suite: Suite, cipher: CipherImpl, server: PublicKey) -> Self {
        ExpectSessionEstablished {
            hs,
            suite,
            cipher,
            server,
        }
    }

    /// Reads session_established; the channel is ready.
    pub fn handle(self, bytes: &[u8]) -> Result<Established, ChannelError> {
        let frame = expect(bytes, FrameKind::Transport, "session_established")?;
        let channel_binding = handshake_hash(&self.hs)?;
        // The client is the initiator: it sends with the first key of the split.
        let (send, recv) = transport_keys(self.hs, self.suite, self.cipher)?;
        let mut plaintext = frame.noise.to_vec();
        let n = recv
            .open_in_place(0, &mut plaintext)
            .map_err(|()| ChannelError::Decrypt("session_established"))?;
        let Plaintext::SessionEstablished(est) = Plaintext::decode(&plaintext[..n])? else {
            return Err(ChannelError::Protocol(
                "expected session_established as the server's first transport message".into(),
            ));
        };
        debug_assert!(n <= frame::MAX_PLAINTEXT);
        Ok(Established {
            info: HandshakeInfo {
                peer: self.server,
                channel_binding,
                session_id: est.session_id,
                expires_at: est.expires_at,
                peer_payload: est.payload.to_vec(),
                suite: self.suite,
            },
            send,
            recv,
            send_nonce: 0,
            recv_nonce: 1,
        })
    }
}
