//! client_auth (`-> s, se`): the server learns the client's identity and admits it or not; then it sends
//! session_established.
//!
//! `se` binds the client's static key to *this* handshake's server ephemeral key: a client_auth relayed
//! into another connection, or replayed later, fails to decrypt (close 4001). The policy runs in the
//! driver between [`ExpectClientAuth::handle`] and [`ClientAuthenticated::establish`].

use super::{
    Established, HandshakeInfo, NoiseState, expect, handshake_hash, remote_static, transport_keys,
};
use crate::config::CipherImpl;
use crate::error::ChannelError;
use crate::frame::{self, FrameKind, SessionEstablished, Suite};
use crate::identity::PublicKey;

/// Server: waiting for client_auth.
pub struct ExpectClientAuth {
    hs: NoiseState,
    suite: Suite,
    cipher: CipherImpl,
    max_auth_payload: usize,
}

impl ExpectClientAuth {
    pub(super) fn new(
        hs: NoiseState,
        suite: Suite,
        cipher: CipherImpl,
        max_auth_payload: usize,
    ) -> Self {
        ExpectClientAuth {
            hs,
            suite,
            cipher,
            max_auth_payload,
        }
    }

    /// Reads client_auth: the client's identity is now proven.
    pub fn handle(mut self, bytes: &[u8]) -> Result<ClientAuthenticated, ChannelError> {
        let frame = expect(bytes, FrameKind::ClientAuth, "client_auth")?;
        let limit = self.max_auth_payload.min(frame::MAX_AUTH_PAYLOAD);
        let size = frame.noise.len().saturating_sub(frame::CLIENT_AUTH_MIN_LEN);
        if size > limit {
            return Err(ChannelError::TooLarge { size, limit });
        }
        let mut payload = vec![0u8; frame.noise.len()];
        let n = self
            .hs
            .read_message(frame.noise, &mut payload)
            .map_err(|_| ChannelError::Decrypt("client_auth"))?;
        payload.truncate(n);
        let peer = remote_static(&self.hs)?;
        let channel_binding = handshake_hash(&self.hs)?;
        Ok(ClientAuthenticated {
            hs: self.hs,
            suite: self.suite,
            cipher: self.cipher,
            peer,
            channel_binding,
            auth_payload: payload,
        })
    }
}

/// Server: the client is authenticated; the policy decides, then [`ClientAuthenticated::establish`].
pub struct ClientAuthenticated {
    hs: NoiseState,
    suite: Suite,
    cipher: CipherImpl,
    peer: PublicKey,
    channel_binding: [u8; 32],
    auth_payload: Vec<u8>,
}

impl ClientAuthenticated {
    /// The client's proven identity.
    pub fn peer(&self) -> PublicKey {
        self.peer
    }

    /// The application auth payload from client_auth.
    pub fn auth_payload(&self) -> &[u8] {
        &self.auth_payload
    }

    /// The handshake hash (channel-binding value).
    pub fn channel_binding(&self) -> &[u8; 32] {
        &self.channel_binding
    }

    /// Finishes the handshake: returns the transport state and the session_established frame (the first
    /// transport message, nonce 0).
    pub fn establish(
        self,
        session_id: [u8; 16],
        expires_at: u64,
        welcome: &[u8],
    ) -> Result<(Established, Vec<u8>), ChannelError> {
        let plaintext = SessionEstablished {
            session_id,
            expires_at,
            payload: welcome,
        }
        .encode();
        let (send, recv) = transport_keys(self.hs, self.suite, self.cipher)?;
        let mut established = Established {
            send,
            recv,
            send_nonce: 0,
            recv_nonce: 0,
            info: HandshakeInfo {
                peer: self.peer,
                channel_binding: self.channel_binding,
                session_id,
                expires_at,
                peer_payload: self.auth_payload,
                suite: self.suite,
            },
        };
        let frame = established.seal(&plaintext)?;
        Ok((established, frame))
    }
}
