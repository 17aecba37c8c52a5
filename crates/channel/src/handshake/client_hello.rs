//! client_hello (`-> e`): the client starts; the server answers with server_hello.
//!
//! The client's Noise message 1 carries its ephemeral key and, in clear (there is no key yet), the
//! [`ClientHello`] payload: protocol version and client nonce. The server checks the version before
//! anything else (the version names the Noise protocol it must build to read the message), so a client of
//! another version gets "unsupported version" (close 4003) rather than a decryption error.

use super::{ExpectServerHello, NoiseState, builder, expect, random_nonce, write};
use crate::config::CipherImpl;
use crate::error::ChannelError;
use crate::frame::{ClientHello, FrameKind, Suite};
use crate::handshake::client_auth::ExpectClientAuth;
use crate::identity::Identity;
use crate::policy::ServerTrust;

/// Client: builds client_hello. `host` is the `host:port` the trust check uses; `auth_payload` goes into
/// client_auth. Returns the state awaiting server_hello and the frame to send. Speaks version 1
/// ([`Suite::ChaChaPoly`]) on [`CipherImpl::Compact`]; see [`start_with`].
pub fn start(
    identity: &Identity,
    trust: ServerTrust,
    host: String,
    auth_payload: Vec<u8>,
) -> Result<(ExpectServerHello, Vec<u8>), ChannelError> {
    start_with(
        Suite::ChaChaPoly,
        CipherImpl::Compact,
        identity,
        trust,
        host,
        auth_payload,
    )
}

/// [`start`], speaking the version of `suite`, its cipher run by `cipher`.
pub fn start_with(
    suite: Suite,
    cipher: CipherImpl,
    identity: &Identity,
    trust: ServerTrust,
    host: String,
    auth_payload: Vec<u8>,
) -> Result<(ExpectServerHello, Vec<u8>), ChannelError> {
    if auth_payload.len() > crate::frame::MAX_AUTH_PAYLOAD {
        return Err(ChannelError::TooLarge {
            size: auth_payload.len(),
            limit: crate::frame::MAX_AUTH_PAYLOAD,
        });
    }
    let hs = builder(identity, suite, cipher)?
        .build_initiator()
        .map_err(ChannelError::noise)?;
    let mut hs = NoiseState::new(hs, suite, cipher);
    let hello = ClientHello {
        version: suite.version(),
        nonce: random_nonce(),
    };
    let frame = write(&mut hs, FrameKind::ClientHello, &hello.encode())?;
    Ok((
        ExpectServerHello::new(hs, suite, cipher, trust, host, auth_payload),
        frame,
    ))
}

/// Server: waiting for client_hello. It speaks every version ([`Suite::ALL`]): the Noise state is built
/// once client_hello names one.
pub struct ExpectClientHello {
    identity: Identity,
    max_auth_payload: usize,
    cipher: CipherImpl,
}

impl ExpectClientHello {
    /// A responder with the server's identity; client_auth payloads above `max_auth_payload` bytes are
    /// refused. The cipher runs on [`CipherImpl::Compact`]; see [`ExpectClientHello::with_cipher`].
    pub fn new(identity: &Identity, max_auth_payload: usize) -> Self {
        Self::with_cipher(identity, max_auth_payload, CipherImpl::Compact)
    }

    /// [`ExpectClientHello::new`], with the cipher run by `cipher`.
    pub fn with_cipher(identity: &Identity, max_auth_payload: usize, cipher: CipherImpl) -> Self {
        ExpectClientHello {
            identity: identity.clone(),
            max_auth_payload,
            cipher,
        }
    }

    /// Reads client_hello; returns the state awaiting client_auth and the server_hello frame to send.
    pub fn handle(self, bytes: &[u8]) -> Result<(ExpectClientAuth, Vec<u8>), ChannelError> {
        let frame = expect(bytes, FrameKind::ClientHello, "client_hello")?;
        let version = ClientHello::peek_version(frame.noise)?;
        let suite =
            Suite::from_version(version).ok_or(ChannelError::UnsupportedVersion(version))?;
        let hs = builder(&self.identity, suite, self.cipher)?
            .build_responder()
            .map_err(ChannelError::noise)?;
        let mut hs = NoiseState::new(hs, suite, self.cipher);
        let mut payload = [0u8; ClientHello::LEN + 64];
        let n = hs
            .read_message(frame.noise, &mut payload)
            .map_err(|_| ChannelError::Decrypt("client_hello"))?;
        ClientHello::decode(&payload[..n])?;
        let server_nonce = random_nonce();
        let reply = write(&mut hs, FrameKind::ServerHello, &server_nonce)?;
        Ok((
            ExpectClientAuth::new(hs, suite, self.cipher, self.max_auth_payload),
            reply,
        ))
    }
}
