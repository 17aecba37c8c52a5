//! server_hello (`<- e, ee, s, es`): the client learns and checks the server's identity, then sends
//! client_auth (`-> s, se`).
//!
//! The server's static key arrives encrypted under `ee` and is proven by `es` (the payload decrypts only
//! if the server holds the private key). The pin is checked here, before the client reveals its own
//! identity: a wrong server never learns who the client is.

use super::{ExpectSessionEstablished, NoiseState, expect, remote_static, write};
use crate::config::CipherImpl;
use crate::error::ChannelError;
use crate::frame::{FrameKind, ServerHello, Suite};
use crate::policy::ServerTrust;

/// Client: waiting for server_hello.
pub struct ExpectServerHello {
    hs: NoiseState,
    suite: Suite,
    cipher: CipherImpl,
    trust: ServerTrust,
    host: String,
    auth_payload: Vec<u8>,
}

impl ExpectServerHello {
    pub(super) fn new(
        hs: NoiseState,
        suite: Suite,
        cipher: CipherImpl,
        trust: ServerTrust,
        host: String,
        auth_payload: Vec<u8>,
    ) -> Self {
        ExpectServerHello {
            hs,
            suite,
            cipher,
            trust,
            host,
            auth_payload,
        }
    }

    /// Reads server_hello and checks the server's key against the pin; returns the state awaiting
    /// session_established and the client_auth frame to send.
    pub fn handle(
        mut self,
        bytes: &[u8],
    ) -> Result<(ExpectSessionEstablished, Vec<u8>), ChannelError> {
        let frame = expect(bytes, FrameKind::ServerHello, "server_hello")?;
        let mut payload = [0u8; 64];
        let n = self
            .hs
            .read_message(frame.noise, &mut payload)
            .map_err(|_| ChannelError::Decrypt("server_hello"))?;
        ServerHello::decode(&payload[..n])?;
        let server = remote_static(&self.hs)?;
        self.trust.verify(&self.host, server)?;
        let auth = write(&mut self.hs, FrameKind::ClientAuth, &self.auth_payload)?;
        Ok((
            ExpectSessionEstablished::new(self.hs, self.suite, self.cipher, server),
            auth,
        ))
    }
}
