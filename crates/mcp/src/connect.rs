//! `tessera mcp connect URL`: a stdio client on one side (any byte streams), a remote Streamable HTTP server
//! on the other.
//!
//! Each client line is POSTed as it came. A request's answer — JSON, or an SSE stream of related messages
//! ending with the response — goes back as lines; notifications and responses expect 202. The session id and
//! the negotiated version are taken from the `initialize` exchange and sent on every later request; a
//! 2026-07-28 request (a `_meta` version claim) gets its headers mirrored from the body instead. After
//! `notifications/initialized` the server's own stream is opened with GET (a 405 is fine). A response stream
//! that ends before its response — a 2025-11-25 server closing it to be polled, or a broken connection — is
//! resumed with GET and `Last-Event-ID` after the server's `retry`, as is the server's own stream. When the
//! client closes its input the session is ended with DELETE. A request past its deadline gets an error to
//! the client and `notifications/cancelled` to a stateful server (a closed stream cancels in 2026-07-28).
//!
//! Requests run concurrently (one task each, all of the session); the client's output has one writer.

use std::sync::{Arc, Mutex, PoisonError};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Duration, Instant, timeout_at};
use tokio_util::codec::FramedRead;

use crate::error::McpError;
use crate::http::{LAST_EVENT_ID, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, sse, stateless};
use crate::jsonrpc::{INVALID_REQUEST, Id, Kind, Message, PROXY_ERROR};
use crate::lines::{DEFAULT_MAX_LINE, Line, LineCodec};
use crate::outbox::{LineTx, LineWriter};
use crate::session::{Direction, Expired, McpSession, Sessions};
use crate::upstream::http::HttpUpstream;

/// How long sending `notifications/cancelled` for an expired request may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the connection learned from the server.
#[derive(Default)]
struct Remote {
    session: Option<HeaderValue>,
    version: Option<HeaderValue>,
}

#[derive(Clone)]
struct Link {
    upstream: HttpUpstream,
    mcp: McpSession,
    out: LineTx,
    remote: Arc<Mutex<Remote>>,
}

/// Runs the bridge until the client closes its input; returns the frames that passed.
pub async fn run<I, O>(
    sessions: &Sessions,
    url: &str,
    client_in: I,
    client_out: O,
) -> Result<u64, McpError>
where
    I: AsyncRead + Send + Unpin + 'static,
    O: AsyncWrite + Send + Unpin + 'static,
{
    let upstream = HttpUpstream::new(url, DEFAULT_MAX_LINE)?;
    let (guard, mcp) = sessions.create("mcp-connect")?;
    let (writer, out) = LineWriter::spawn(guard.session(), client_out, 1024)?;
    let link = Link {
        upstream,
        mcp: mcp.clone(),
        out,
        remote: Arc::new(Mutex::new(Remote::default())),
    };
    pump(
        &link,
        FramedRead::new(client_in, LineCodec::new(DEFAULT_MAX_LINE)),
    )
    .await;
    mcp.wait_idle().await;
    let session = link.remote_session();
    if let Some(id) = session {
        let headers = link.headers(None);
        if let Ok(r) = link
            .upstream
            .send(Method::DELETE, &headers, Some(&id), Bytes::new())
            .await
        {
            let _ = r.into_body().collect().await;
        }
    }
    let frames = mcp.frames();
    drop(link);
    writer.finish().await;
    guard.close();
    Ok(frames)
}

async fn pump<S: Stream<Item = std::io::Result<Line>> + Unpin>(link: &Link, mut lines: S) {
    while let Some(line) = lines.next().await {
        let bytes = match line {
            Ok(Line::Frame(bytes)) => bytes,
            Ok(Line::TooLong) => {
                link.out
                    .send(&Message::error_reply(
                        None,
                        INVALID_REQUEST,
                        "message too large",
                    ))
                    .await;
                continue;
            }
            Err(_) => return,
        };
        let message = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                link.out.send(&e.reply()).await;
                continue;
            }
        };
        link.mcp.observe(&message);
        let pending = match message.kind() {
            Kind::Request { .. } => {
                match link.mcp.track_request(Direction::ClientToServer, &message) {
                    Ok(p) => Some(p),
                    Err(refusal) => {
                        link.out.send(&refusal.reply).await;
                        continue;
                    }
                }
            }
            Kind::Response { .. } => {
                link.mcp
                    .correlate_response(Direction::ClientToServer, &message);
                None
            }
            _ => None,
        };
        let task = link.clone();
        let _ = link
            .mcp
            .session()
            .spawn(async move { task.exchange(message, pending).await });
    }
}

impl Link {
    fn remote(&self) -> std::sync::MutexGuard<'_, Remote> {
        self.remote.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server's session id, once `initialize` gave one.
    fn remote_session(&self) -> Option<HeaderValue> {
        self.remote().session.clone()
    }

    fn headers(&self, message: Option<&Message>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        let modern = message.and_then(|m| stateless::claim(m).map(|c| (m, c)));
        match modern {
            Some((m, claim)) => {
                let mut put = |name: &'static str, value: &str| {
                    if let Ok(v) = HeaderValue::from_str(value) {
                        headers.insert(name, v);
                    }
                };
                put("mcp-protocol-version", &claim.version);
                if let Some(method) = m.method().filter(|_| m.is_request()) {
                    put("mcp-method", method);
                }
                if let Some(name) = &claim.name {
                    put("mcp-name", name);
                }
            }
            None => {
                if let Some(v) = self.remote().version.clone() {
                    headers.insert(MCP_PROTOCOL_VERSION.clone(), v);
                }
            }
        }
        headers
    }

    /// One POST and what comes back, within the request's deadline. Past it, the client gets an error and
    /// the server `notifications/cancelled` (a 2026-07-28 request is cancelled by closing its stream, which
    /// dropping the exchange does).
    async fn exchange(self, message: Message, pending: Option<tessera_session::Pending<Message>>) {
        let id = message.id().cloned().filter(|_| message.is_request());
        let initialized = message.method() == Some("notifications/initialized");
        let status = match (&id, pending) {
            (Some(id), Some(pending)) => {
                let deadline = pending.deadline();
                // Only a deadline that passed ends the exchange early; a response lets it finish.
                let expired = async {
                    match McpSession::outcome(pending, id).await {
                        Err(Some(expired)) => expired,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    status = self.post(&message, Some((id, deadline))) => status,
                    expired = expired => {
                        self.expire(&message, expired).await;
                        return;
                    }
                }
            }
            _ => self.post(&message, None).await,
        };
        let Some(status) = status else { return };
        if let Some(id) = &id
            && self.mcp.forget(Direction::ClientToServer, id)
        {
            // No response came back (an HTTP error without a JSON-RPC body): answer the client ourselves.
            let text = format!("the server answered HTTP {status} without a response");
            self.out
                .send(&Message::error_reply(Some(id), PROXY_ERROR, &text))
                .await;
        }
        if initialized && status.is_success() {
            let task = self.clone();
            let _ = self.mcp.session().spawn(async move { task.listen().await });
        }
    }

    /// A request's deadline passed unanswered (decided once by the runtime, against a response racing it):
    /// the client gets the error and a stateful server `notifications/cancelled`.
    async fn expire(&self, message: &Message, expired: Expired) {
        self.out.send(&expired.reply).await;
        if stateless::claim(message).is_some() {
            return;
        }
        let headers = self.headers(Some(&expired.cancel));
        let session = self.remote_session();
        let sent = self.upstream.send(
            Method::POST,
            &headers,
            session.as_ref(),
            expired.cancel.raw().clone(),
        );
        if let Ok(Ok(r)) = tokio::time::timeout(CANCEL_TIMEOUT, sent).await {
            let _ = tokio::time::timeout(CANCEL_TIMEOUT, r.into_body().collect()).await;
        }
    }

    /// POSTs `message` and delivers what comes back; resumes a response stream that ends early. Returns the
    /// HTTP status, or `None` when the server could not be reached (the client has been answered).
    async fn post(&self, message: &Message, request: Option<(&Id, Instant)>) -> Option<StatusCode> {
        let headers = self.headers(Some(message));
        let session = self.remote_session();
        let response = match self
            .upstream
            .send(
                Method::POST,
                &headers,
                session.as_ref(),
                message.raw().clone(),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if let Some((id, _)) = request {
                    self.mcp.forget(Direction::ClientToServer, id);
                    let text = format!("the server did not answer: {e}");
                    self.out
                        .send(&Message::error_reply(Some(id), PROXY_ERROR, &text))
                        .await;
                }
                return None;
            }
        };
        if let Some(v) = response.headers().get(&MCP_SESSION_ID) {
            self.remote().session = Some(v.clone());
        }
        let status = response.status();
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(crate::http::sse::is_event_stream);
        if is_sse {
            let mut parser = sse::Parser::new(DEFAULT_MAX_LINE);
            let id = request.map(|(id, _)| id);
            self.read_events(response.into_body(), &mut parser, id)
                .await;
            if let Some((id, deadline)) = request {
                // The stream ended before the response (the server closed it to be polled, or it broke).
                self.resume(id, &mut parser, deadline).await;
            }
        } else {
            let mut body = response.into_body().into_data_stream();
            let mut json = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                if json.len() + chunk.len() <= DEFAULT_MAX_LINE {
                    json.extend_from_slice(&chunk);
                }
            }
            if !json.is_empty() {
                self.deliver(Bytes::from(json)).await;
            }
        }
        Some(status)
    }

    /// Delivers the events of an SSE body as they come. With `until`, stops once that request of the
    /// client's has been answered (the server ends the stream there anyway).
    async fn read_events(&self, body: Incoming, parser: &mut sse::Parser, until: Option<&Id>) {
        let mut body = body.into_data_stream();
        while let Some(Ok(chunk)) = body.next().await {
            let mut events = Vec::new();
            parser.feed(&chunk, |e| events.push(e.data));
            for data in events {
                self.deliver(Bytes::from(data)).await;
            }
            if until.is_some_and(|id| !self.mcp.is_pending(Direction::ClientToServer, id)) {
                return;
            }
        }
    }

    /// Resumes a request's response stream that ended before its response: GET with `Last-Event-ID` after
    /// the `retry` the server asked for, at most [`sse::MAX_RESUMES`] times and never past the request's deadline.
    /// Without an event id there is nothing to resume from, and the request is answered as unanswered.
    async fn resume(&self, id: &Id, parser: &mut sse::Parser, deadline: Instant) {
        for _ in 0..sse::MAX_RESUMES {
            if !self.mcp.is_pending(Direction::ClientToServer, id) {
                return;
            }
            let Some(last) = parser
                .last_event_id()
                .and_then(|v| HeaderValue::from_str(v).ok())
            else {
                return;
            };
            let wait = parser.reconnect_delay();
            if Instant::now() + wait >= deadline {
                return;
            }
            tokio::time::sleep(wait).await;
            let Ok(Some(response)) = timeout_at(deadline, self.open_stream(Some(last))).await
            else {
                return;
            };
            let _ = timeout_at(
                deadline,
                self.read_events(response.into_body(), parser, Some(id)),
            )
            .await;
        }
    }

    /// GET on the endpoint: the server's own stream, or with `Last-Event-ID` the rest of a broken one.
    /// `None` if the server has none (405) or failed.
    async fn open_stream(&self, last: Option<HeaderValue>) -> Option<hyper::Response<Incoming>> {
        let mut headers = self.headers(None);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        if let Some(last) = last {
            headers.insert(LAST_EVENT_ID.clone(), last);
        }
        let session = self.remote_session();
        let response = self
            .upstream
            .send(Method::GET, &headers, session.as_ref(), Bytes::new())
            .await
            .ok()?;
        response.status().is_success().then_some(response)
    }

    /// The server's own stream (GET; a server without one answers 405). When it ends it is opened again
    /// with `Last-Event-ID` after the server's `retry`; [`sse::MAX_RESUMES`] ends in a row that brought nothing
    /// stop it. It ends with the session.
    async fn listen(self) {
        let mut parser = sse::Parser::new(DEFAULT_MAX_LINE);
        let mut idle_ends = 0;
        let mut last = None;
        while idle_ends < sse::MAX_RESUMES {
            let Some(response) = self.open_stream(last.take()).await else {
                return;
            };
            let before = self.mcp.frames();
            self.read_events(response.into_body(), &mut parser, None)
                .await;
            idle_ends = if self.mcp.frames() == before {
                idle_ends + 1
            } else {
                0
            };
            let Some(id) = parser
                .last_event_id()
                .and_then(|v| HeaderValue::from_str(v).ok())
            else {
                return;
            };
            last = Some(id);
            tokio::time::sleep(parser.reconnect_delay()).await;
        }
    }

    async fn deliver(&self, data: Bytes) {
        let Ok(message) = Message::parse(data) else {
            return;
        };
        self.mcp.observe(&message);
        match message.kind() {
            Kind::Response { .. } => {
                if self
                    .mcp
                    .correlate_response(Direction::ServerToClient, &message)
                    .is_none()
                {
                    return;
                }
                if let Some(negotiated) = self.mcp.negotiated()
                    && let Some(version) = negotiated
                        .protocol_version
                        .and_then(|v| HeaderValue::from_str(&v).ok())
                {
                    self.remote().version.get_or_insert(version);
                }
            }
            Kind::Request { .. } => {
                let _ = self.mcp.track_request(Direction::ServerToClient, &message);
            }
            _ => {}
        }
        self.out.send(&message).await;
    }
}
