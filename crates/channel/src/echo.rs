//! An echo service on top of a [`Listener`]: every message a client sends comes back to it. The demo
//! server of `tessera channel serve`, and the peer of the interoperability test and the benchmark.

use crate::listener::Listener;
use crate::transport::Channel;

/// Accepts channels until the listener ends, echoing each on a task of the channel's own session (so the
/// task stops when the session ends, and shutdown waits for it).
pub async fn echo(mut listener: Listener) {
    while let Some(channel) = listener.accept().await {
        let session = channel.session().clone();
        if session.spawn(echo_channel(channel)).is_err() {
            tracing::debug!(session = %session.id(), "channel ended before its echo task started");
        }
    }
}

/// Echoes one channel until it closes.
pub async fn echo_channel(channel: Channel) {
    let peer = channel.peer();
    let (mut reader, writer) = channel.split();
    loop {
        match reader.recv().await {
            Ok(Some(message)) => {
                if writer.send(message).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "echo channel ended");
                break;
            }
        }
    }
}
