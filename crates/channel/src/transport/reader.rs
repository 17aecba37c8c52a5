//! The reader task: the only reader of a connection's socket. It owns the receive counter, decrypts each
//! frame in place, reassembles fragments up to the size limit and queues whole messages for the
//! [`super::ChannelReader`]; an undecryptable, oversized or unexpected frame ends the channel with the
//! matching close code.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use tessera_session::wipe;
use tokio::sync::mpsc;

use super::{Cause, Shared, local};
use crate::cipher::TransportKey;
use crate::error::{ChannelError, close_code};
use crate::frame::Plaintext;
use crate::handshake;
use crate::ws::{WsMsg, WsStream};

pub(super) struct Reader {
    pub(super) shared: Arc<Shared>,
    pub(super) key: TransportKey,
    pub(super) nonce: u64,
    pub(super) max_messages: u64,
    /// The message being reassembled from its fragments.
    pub(super) partial: BytesMut,
    /// The length of the last message that came in several fragments.
    pub(super) expected: usize,
}

impl Reader {
    pub(super) async fn run(mut self, mut stream: WsStream, tx: mpsc::Sender<Bytes>) {
        let closing = self.shared.closing.clone();
        let mut delivering = true;
        loop {
            let item = tokio::select! {
                biased;
                _ = closing.cancelled() => return,
                item = stream.next() => item,
            };
            let cause = match item {
                Some(Ok(WsMsg::Binary(bytes))) => match self.open(&bytes) {
                    Ok(None) => continue,
                    Ok(Some(message)) => {
                        self.shared.session.touch();
                        // If the reader half was dropped, keep draining the socket (for pings and
                        // the close frame) but discard data.
                        // Boxed, as the writer's writes: an idle reader carries no send state.
                        if delivering && Box::pin(tx.send(message)).await.is_err() {
                            delivering = false;
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(session = %self.shared.session.id(), error = %e, "closing channel");
                        local(&e)
                    }
                },
                Some(Ok(WsMsg::Ping(_) | WsMsg::Pong)) => {
                    self.shared.session.touch();
                    continue;
                }
                Some(Ok(WsMsg::Text)) => local(&ChannelError::Protocol(
                    "text WebSocket message (the channel uses binary messages only)".into(),
                )),
                Some(Ok(WsMsg::Close(frame))) => {
                    let (code, reason) = frame.unwrap_or((close_code::NORMAL, String::new()));
                    Cause::Peer { code, reason }
                }
                Some(Err(e)) => match ChannelError::from(e) {
                    e @ ChannelError::TooLarge { .. } => local(&e),
                    e => Cause::Lost(e.to_string()),
                },
                None => Cause::Lost("connection closed without a close frame".into()),
            };
            self.shared.end(cause);
            return;
        }
    }

    /// Decrypts one frame; returns a complete message when its last fragment arrives. A message's first
    /// fragment is decrypted into a buffer of its own, which becomes the message when it is the only one;
    /// later fragments are decrypted straight onto the end of the message so far (no copy of the bytes
    /// already received).
    fn open(&mut self, bytes: &[u8]) -> Result<Option<Bytes>, ChannelError> {
        if self.nonce >= self.max_messages {
            return Err(ChannelError::NonceExhausted);
        }
        let body = handshake::transport_body(bytes)?;
        let undecryptable = |()| ChannelError::Decrypt("transport message");
        if self.partial.is_empty() {
            // Copied out of the WebSocket's buffer once, then decrypted in place.
            let mut out = BytesMut::with_capacity(body.len());
            out.extend_from_slice(body);
            let n = self
                .key
                .open_in_place(self.nonce, &mut out)
                .map_err(undecryptable)?;
            self.nonce += 1;
            out.truncate(n);
            let checked = data_fragment(&out).and_then(|last| {
                self.check_size(out.len() - 1)?;
                Ok(last)
            });
            let last = match checked {
                Ok(last) => last,
                Err(e) => {
                    wipe(&mut out);
                    return Err(e);
                }
            };
            out.advance(1);
            if last {
                return Ok(Some(out.freeze()));
            }
            // Room for a message as long as the last fragmented one, so it grows once, not by doubling;
            // the first fragment moves there, and its own buffer is zeroized.
            let mut partial = BytesMut::with_capacity(self.expected.max(out.len()));
            partial.extend_from_slice(&out);
            wipe(&mut out);
            self.partial = partial;
            return Ok(None);
        }
        // The fragment is copied onto the end of the message so far and decrypted there; its type byte
        // lands on the message's last byte, which is put back after.
        let at = self.partial.len() - 1;
        let kept = self.partial[at];
        grow_zeroizing(
            &mut self.partial,
            body.len().saturating_sub(1),
            self.shared.max_message_size.saturating_add(1),
        );
        self.partial.truncate(at);
        self.partial.extend_from_slice(body);
        let n = self
            .key
            .open_in_place(self.nonce, &mut self.partial[at..])
            .map_err(undecryptable)?;
        self.nonce += 1;
        self.partial.truncate(at + n);
        let last = data_fragment(&self.partial[at..])?;
        self.partial[at] = kept;
        self.check_size(self.partial.len())?;
        if !last {
            return Ok(None);
        }
        self.expected = self.partial.len().min(self.shared.max_message_size);
        // Taken whole, not split off: the message is then its buffer's only handle (the receiver can
        // scrub it), and the next fragmented message gets a buffer of its own, sized `expected`.
        Ok(Some(std::mem::take(&mut self.partial).freeze()))
    }

    fn check_size(&self, size: usize) -> Result<(), ChannelError> {
        if size > self.shared.max_message_size {
            return Err(ChannelError::TooLarge {
                size,
                limit: self.shared.max_message_size,
            });
        }
        Ok(())
    }
}

/// Makes room for `additional` more bytes. Where `BytesMut` would move the bytes to a larger buffer and
/// free the old one as it is, the old one is zeroized first: it holds plaintext. Grows by doubling, but
/// not past `limit` unless `additional` needs it.
fn grow_zeroizing(buffer: &mut BytesMut, additional: usize, limit: usize) {
    if buffer.capacity() - buffer.len() >= additional {
        return;
    }
    let needed = buffer.len() + additional;
    let wanted = needed.max(buffer.capacity().saturating_mul(2).min(limit));
    let mut grown = BytesMut::with_capacity(wanted);
    grown.extend_from_slice(buffer);
    wipe(buffer);
    *buffer = grown;
}

impl Drop for Reader {
    /// A message cut short (the channel ended between its fragments) is plaintext nobody will read.
    fn drop(&mut self) {
        wipe(&mut self.partial);
    }
}

/// Whether a decrypted transport plaintext is a message's last data fragment (or a protocol error).
fn data_fragment(plaintext: &[u8]) -> Result<bool, ChannelError> {
    match Plaintext::decode(plaintext)? {
        Plaintext::Data { last, .. } => Ok(last),
        Plaintext::SessionEstablished(_) => Err(ChannelError::Protocol(
            "unexpected session_established after the handshake".into(),
        )),
    }
}
