//! One view of a WebSocket for the rest of the crate, whichever library carries it: axum's `WebSocket` on
//! the server, tokio-tungstenite's `WebSocketStream` on the client. Both become a boxed sink and stream of
//! [`WsMsg`].

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt, future};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;

use crate::error::ChannelError;
use crate::frame::MAX_FRAME;

/// A WebSocket message, library-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WsMsg {
    Binary(Bytes),
    Text,
    Ping(Bytes),
    Pong,
    Close(Option<(u16, String)>),
}

/// A WebSocket-level failure.
#[derive(Debug, Clone)]
pub(crate) enum WsError {
    /// A message or frame above the configured limit.
    TooLarge,
    Other(String),
}

impl From<WsError> for ChannelError {
    fn from(e: WsError) -> Self {
        match e {
            WsError::TooLarge => ChannelError::TooLarge {
                size: MAX_FRAME + 1,
                limit: MAX_FRAME,
            },
            WsError::Other(text) => ChannelError::WebSocket(text),
        }
    }
}

fn classify(e: &tungstenite::Error) -> WsError {
    match e {
        tungstenite::Error::Capacity(_) => WsError::TooLarge,
        other => WsError::Other(other.to_string()),
    }
}

pub(crate) type WsSink = Pin<Box<dyn Sink<WsMsg, Error = WsError> + Send>>;
pub(crate) type WsStream = Pin<Box<dyn Stream<Item = Result<WsMsg, WsError>> + Send>>;

/// Splits an upgraded axum socket.
pub(crate) fn from_axum(ws: axum::extract::ws::WebSocket) -> (WsSink, WsStream) {
    use axum::extract::ws::{CloseFrame, Message};
    let (sink, stream) = ws.split();
    let sink = sink
        .sink_map_err(|e: axum::Error| WsError::Other(e.to_string()))
        .with(|m: WsMsg| {
            future::ready(Ok::<_, WsError>(match m {
                WsMsg::Binary(b) => Message::Binary(b),
                WsMsg::Ping(b) => Message::Ping(b),
                WsMsg::Pong => Message::Pong(Bytes::new()),
                WsMsg::Text => Message::Text("".into()),
                WsMsg::Close(frame) => Message::Close(frame.map(|(code, reason)| CloseFrame {
                    code,
                    reason: reason.into(),
                })),
            }))
        });
    let stream = stream.map(|item| match item {
        Ok(Message::Binary(b)) => Ok(WsMsg::Binary(b)),
        Ok(Message::Text(_)) => Ok(WsMsg::Text),
        Ok(Message::Ping(b)) => Ok(WsMsg::Ping(b)),
        Ok(Message::Pong(_)) => Ok(WsMsg::Pong),
        Ok(Message::Close(frame)) => Ok(WsMsg::Close(
            frame.map(|f| (f.code, f.reason.as_str().to_owned())),
        )),
        Err(e) => Err(match e.into_inner().downcast::<tungstenite::Error>() {
            Ok(inner) => classify(&inner),
            Err(other) => WsError::Other(other.to_string()),
        }),
    });
    (Box::pin(sink), Box::pin(stream))
}

/// Splits a tokio-tungstenite socket.
pub(crate) fn from_tungstenite<S>(ws: WebSocketStream<S>) -> (WsSink, WsStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tungstenite::Message;
    use tungstenite::protocol::CloseFrame;
    let (sink, stream) = ws.split();
    let sink = sink
        .sink_map_err(|e: tungstenite::Error| classify(&e))
        .with(|m: WsMsg| {
            future::ready(Ok::<_, WsError>(match m {
                WsMsg::Binary(b) => Message::Binary(b),
                WsMsg::Ping(b) => Message::Ping(b),
                WsMsg::Pong => Message::Pong(Bytes::new()),
                WsMsg::Text => Message::Text("".into()),
                WsMsg::Close(frame) => Message::Close(frame.map(|(code, reason)| CloseFrame {
                    code: code.into(),
                    reason: reason.into(),
                })),
            }))
        });
    let stream = stream.filter_map(|item| {
        future::ready(match item {
            Ok(Message::Binary(b)) => Some(Ok(WsMsg::Binary(b))),
            Ok(Message::Text(_)) => Some(Ok(WsMsg::Text)),
            Ok(Message::Ping(b)) => Some(Ok(WsMsg::Ping(b))),
            Ok(Message::Pong(_)) => Some(Ok(WsMsg::Pong)),
            Ok(Message::Close(frame)) => Some(Ok(WsMsg::Close(
                frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
            ))),
            Ok(Message::Frame(_)) => None,
            Err(e) => Some(Err(classify(&e))),
        })
    });
    (Box::pin(sink), Box::pin(stream))
}

/// The next binary frame of a handshake; pings and pongs are skipped, anything else is an error.
pub(crate) async fn next_frame(stream: &mut WsStream) -> Result<Bytes, ChannelError> {
    loop {
        match stream.next().await {
            Some(Ok(WsMsg::Binary(b))) => return Ok(b),
            Some(Ok(WsMsg::Ping(_) | WsMsg::Pong)) => continue,
            Some(Ok(WsMsg::Text)) => {
                return Err(ChannelError::Protocol(
                    "text WebSocket message (the channel uses binary messages only)".into(),
                ));
            }
            Some(Ok(WsMsg::Close(frame))) => {
                let (code, reason) = frame.unwrap_or((1005, String::new()));
                return Err(ChannelError::PeerClosed { code, reason });
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(ChannelError::WebSocket(
                    "connection closed during the handshake".into(),
                ));
            }
        }
    }
}

/// Sends a close frame and closes the sink, giving up after `limit`.
pub(crate) async fn close(
    sink: &mut WsSink,
    code: u16,
    reason: String,
    limit: std::time::Duration,
) {
    let _ = tokio::time::timeout(limit, async {
        // A sink that returned an error must not be polled again (its error mapper panics if it is).
        if sink.send(WsMsg::Close(Some((code, reason)))).await.is_ok() {
            let _ = sink.close().await;
        }
    })
    .await;
}

/// Closes a handshake that failed with `error`, unless the connection is already gone.
pub(crate) async fn close_after(
    sink: &mut WsSink,
    error: &ChannelError,
    limit: std::time::Duration,
) {
    if !matches!(
        error,
        ChannelError::PeerClosed { .. } | ChannelError::WebSocket(_)
    ) {
        close(sink, error.close_code(), error.close_reason(), limit).await;
    }
}
