//! A remote Streamable HTTP upstream (plain HTTP, e.g. a server on loopback).
//!
//! Requests are forwarded with their body unchanged and the standard MCP headers; the proxy's
//! `Mcp-Session-Id` is swapped for the upstream's. Response bodies stream back chunk by chunk as they arrive
//! (SSE unbuffered) while an inspector reads the events as they pass to correlate responses, track the
//! server's own requests and record frames. A request past its deadline gets a JSON-RPC error as the last
//! thing on its response, and the upstream gets `notifications/cancelled`. A client that goes away drops the
//! relay, which withdraws its pending request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::McpError;
use crate::http::{
    HttpSession, LAST_EVENT_ID, Link, MCP_PROTOCOL_VERSION, MCP_SESSION_ID, State, error_response,
    set_session_header, sse,
};
use crate::jsonrpc::{Id, Kind, Message, PROXY_ERROR};
use crate::metrics;
use crate::session::{Direction, Expired, McpSession, Withdraw};
use crate::upstream::inspect::{Inspector, LeftOut};

/// The client for one upstream URL.
#[derive(Debug, Clone)]
pub struct HttpUpstream {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    max_message: usize,
}

impl HttpUpstream {
    /// A client for `url` (`http://host:port/path`).
    pub fn new(url: &str, max_message: usize) -> Result<Self, McpError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| McpError::BadUpstream(url.to_owned(), "not a URL"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(McpError::BadUpstream(
                url.to_owned(),
                "only http://host[:port]/path is supported",
            ));
        }
        let mut connector = HttpConnector::new();
        // Small request bodies: without this, Nagle and delayed ACKs add ~40 ms per request.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector);
        Ok(HttpUpstream {
            client,
            uri,
            max_message,
        })
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        headers: &HeaderMap,
        session: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = self.uri.clone();
        let out = request.headers_mut();
        for (name, value) in headers {
            let n = name.as_str();
            let forwarded = matches!(
                n,
                "accept" | "content-type" | "authorization" | "mcp-method" | "mcp-name"
            ) || *name == MCP_PROTOCOL_VERSION
                || *name == LAST_EVENT_ID
                || n.starts_with("mcp-param-");
            if forwarded {
                out.append(name.clone(), value.clone());
            }
        }
        if let Some(id) = session {
            out.insert(MCP_SESSION_ID.clone(), id.clone());
        }
        self.client.request(request).await
    }
}

fn upstream_of(state: &State) -> Option<&HttpUpstream> {
    state.upstream.as_ref()
}

fn upstream_session(session: &HttpSession) -> Option<&HeaderValue> {
    match &session.link {
        Link::Url { upstream_id, .. } => upstream_id.get(),
        Link::Child { .. } => None,
    }
}

/// Copies the upstream's status and content headers; the session header is the proxy's own or none.
fn relay_head(upstream: &axum::http::response::Parts, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = upstream.status;
    for name in [
        header::CONTENT_TYPE,
        header::CACHE_CONTROL,
        header::WWW_AUTHENTICATE,
        header::RETRY_AFTER,
    ] {
        if let Some(v) = upstream.headers.get(&name) {
            response.headers_mut().insert(name, v.clone());
        }
    }
    if let Some(v) = upstream.headers.get("x-accel-buffering") {
        response
            .headers_mut()
            .insert("x-accel-buffering", v.clone());
    }
    response
}

/// POST a client message upstream and relay the answer. `key` is the pending key of a stateless request
/// (clients of one group may reuse ids); `None` tracks the request under its own id.
pub(crate) async fn post(
    state: &Arc<State>,
    session: &Arc<HttpSession>,
    headers: &HeaderMap,
    message: Message,
    new_session: bool,
    key: Option<Id>,
) -> Response {
    let Some(up) = upstream_of(state) else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "no upstream URL");
    };
    let mcp = &session.mcp;
    let meta = mcp.observe(&message);
    metrics::frame(Direction::ClientToServer);
    if let Some(tape) = &state.tape {
        tape.frame(&meta, Direction::ClientToServer, &message, None);
    }
    let mut waiter = None;
    let mut ticket = None;
    match message.kind() {
        Kind::Request { id, method } => {
            match mcp.track_request_as(Direction::ClientToServer, &message, key.as_ref()) {
                // A listen stream stays open by design: no deadline applies to it.
                Ok(pending) if &**method == "subscriptions/listen" => {
                    ticket = Some(pending.ticket());
                }
                Ok(pending) => {
                    ticket = Some(pending.ticket());
                    let id = id.clone();
                    let fut: WaitFuture =
                        Box::pin(async move { McpSession::outcome(pending, &id).await });
                    waiter = Some(fut);
                }
                Err(refusal) => {
                    return crate::http::json_response(StatusCode::OK, &refusal.reply, None);
                }
            }
        }
        Kind::Notification { method } if &**method == "notifications/cancelled" => {
            mcp.cancelled_by(Direction::ClientToServer, &message);
        }
        Kind::Response { .. } => {
            mcp.correlate_response(Direction::ClientToServer, &message);
        }
        _ => {}
    }
    // Held from here on: a client that goes away at any point withdraws its request.
    let forget = ticket.map(|ticket| mcp.withdraw_on_drop(ticket));
    let keyed = key.zip(message.id().cloned()).map(|(key, id)| (id, key));
    let cancel = CancelUpstream {
        upstream: up.clone(),
        headers: headers.clone(),
        session: upstream_session(session).cloned(),
        tracker: state.tracker.clone(),
        timeout: state.config.control_timeout(),
    };
    let send = up.send(
        Method::POST,
        headers,
        upstream_session(session),
        message.raw().clone(),
    );
    let upstream = match head(mcp, send, &mut waiter, message.is_request()).await {
        Head::Sent(Ok(r)) => r,
        Head::Sent(Err(e)) => {
            drop(forget);
            tracing::warn!(session = %mcp.id(), error = %e, "upstream POST failed");
            return error_response(
                StatusCode::BAD_GATEWAY,
                "Bad Gateway: the upstream did not answer",
            );
        }
        early => {
            let request = message.id().filter(|_| message.is_request());
            return answer_early(early, mcp, cancel, request, headers, new_session, forget);
        }
    };
    let success = upstream.status().is_success();
    if new_session
        && success
        && let (Link::Url { upstream_id, .. }, Some(v)) =
            (&session.link, upstream.headers().get(&MCP_SESSION_ID))
    {
        let _ = upstream_id.set(v.clone());
    }
    let is_sse = is_event_stream(upstream.headers());
    let (head, body) = upstream.into_parts();
    let relay = Relay {
        body: None,
        inspector: Inspector::new(
            mcp.clone(),
            is_sse,
            up.max_message,
            state.tape.clone(),
            keyed,
        )
        .with_rules(state.config.rules.clone(), cancel.clone()),
        waiter,
        forget,
        cancel: Some(cancel),
        sent_any: false,
        sse: is_sse,
        request: message.id().filter(|_| message.is_request()).cloned(),
    };
    let mut response = relay_head(
        &head,
        Body::from_stream(relay.into_stream(body.into_data_stream())),
    );
    if new_session && success {
        set_session_header(&mut response, mcp.id());
    }
    response
}

/// GET the session's server stream from upstream and relay it (until the session ends).
pub(crate) async fn get(
    state: &Arc<State>,
    session: &Arc<HttpSession>,
    headers: &HeaderMap,
) -> Response {
    let Some(up) = upstream_of(state) else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "no upstream URL");
    };
    let upstream = match up
        .send(
            Method::GET,
            headers,
            upstream_session(session),
            Bytes::new(),
        )
        .await
    {
        Ok(r) => r,
        Err(_) => {
            return error_response(
                StatusCode::BAD_GATEWAY,
                "Bad Gateway: the upstream did not answer",
            );
        }
    };
    let is_sse = is_event_stream(upstream.headers());
    let replies = CancelUpstream {
        upstream: up.clone(),
        headers: headers.clone(),
        session: upstream_session(session).cloned(),
        tracker: state.tracker.clone(),
        timeout: state.config.control_timeout(),
    };
    let relay = Relay {
        body: None,
        inspector: Inspector::new(
            session.mcp.clone(),
            is_sse,
            up.max_message,
            state.tape.clone(),
            None,
        )
        .with_rules(state.config.rules.clone(), replies),
        waiter: None,
        forget: None,
        cancel: None,
        sent_any: false,
        sse: is_sse,
        request: None,
    };
    let ended = session.mcp.session().token();
    let (head, body) = upstream.into_parts();
    let stream = relay
        .into_stream(body.into_data_stream())
        .take_until(ended.cancelled_owned());
    relay_head(&head, Body::from_stream(stream))
}

/// DELETE the upstream session, waiting at most [`HttpConfig::control_timeout_ms`] for its answer.
///
/// [`HttpConfig::control_timeout_ms`]: crate::http::HttpConfig::control_timeout_ms
pub(crate) async fn delete(state: &Arc<State>, session: &Arc<HttpSession>, headers: &HeaderMap) {
    if let (Some(up), Some(id)) = (upstream_of(state), upstream_session(session)) {
        let sent = up.send(Method::DELETE, headers, Some(id), Bytes::new());
        match tokio::time::timeout(state.config.control_timeout(), sent).await {
            Ok(Ok(r)) => drop(r),
            Ok(Err(e)) => tracing::debug!(error = %e, "upstream DELETE failed"),
            Err(_) => tracing::debug!(session = %session.mcp.id(), "upstream DELETE timed out"),
        }
    }
}

/// How waiting for an upstream POST's response head ended.
enum Head {
    /// The head came (or the send failed).
    Sent(Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error>),
    /// The request's outcome came first: its deadline, a client's cancel, or (rarely) its response by
    /// another way.
    Outcome(Result<Message, Option<Expired>>),
    /// The session ended.
    Ended,
    /// A notification or response whose head did not come within the request deadline.
    TimedOut,
}

/// Waits for the response head of an upstream POST, but no longer than the request's outcome (its
/// deadline), the session's life, or — for a message that is not a request — the request deadline. A
/// request without a waiter (a listen) waits for as long as the session lives.
async fn head(
    mcp: &McpSession,
    send: impl Future<Output = Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error>>,
    waiter: &mut Option<WaitFuture>,
    is_request: bool,
) -> Head {
    let ended = mcp.session().token();
    let limit = async {
        match waiter.as_mut() {
            Some(waiter) => Head::Outcome(waiter.await),
            None if is_request => std::future::pending().await,
            None => {
                tokio::time::sleep(mcp.deadline()).await;
                Head::TimedOut
            }
        }
    };
    let head = tokio::select! {
        biased;
        () = ended.cancelled() => Head::Ended,
        sent = send => Head::Sent(sent),
        early = limit => early,
    };
    if matches!(head, Head::Outcome(_)) {
        // Its future is done: never polled again.
        *waiter = None;
    }
    head
}

/// Answers a POST whose upstream head did not come in time (see [`head`]): the deadline's error (and
/// `notifications/cancelled` upstream), as a relay past its deadline does; 404 if the session ended (the
/// upstream told too); the empty answer of a cancelled request; 504 for a late notification or response.
fn answer_early(
    early: Head,
    mcp: &McpSession,
    cancel: CancelUpstream,
    request: Option<&Id>,
    headers: &HeaderMap,
    new_session: bool,
    mut forget: Option<Withdraw>,
) -> Response {
    if new_session {
        // No session without a successful initialize.
        mcp.session().close();
    }
    let accept = crate::http::Accept::from_headers(headers);
    match early {
        Head::Outcome(Ok(response)) => {
            if let Some(forget) = forget.as_mut() {
                forget.disarm();
            }
            crate::http::message_response(&response, accept, None)
        }
        Head::Outcome(Err(Some(expired))) => {
            metrics::expired();
            cancel.send(expired.cancel);
            crate::http::message_response(&expired.reply, accept, None)
        }
        Head::Outcome(Err(None)) if !mcp.session().is_ended() => match request {
            Some(id) => crate::http::cancelled_response(accept, id),
            None => error_response(StatusCode::BAD_GATEWAY, "Bad Gateway"),
        },
        Head::Outcome(Err(None)) | Head::Ended => {
            if let Some(id) = request {
                cancel.send(Message::cancelled(id, "the session ended"));
            }
            error_response(StatusCode::NOT_FOUND, "Session ended before the response")
        }
        Head::TimedOut | Head::Sent(_) => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "Gateway Timeout: the upstream did not answer in time",
        ),
    }
}

/// Whether the body is an event stream.
fn is_event_stream(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(sse::is_event_stream)
}

type DataStream = http_body_util::BodyDataStream<Incoming>;
type WaitFuture = Pin<Box<dyn Future<Output = Result<Message, Option<Expired>>> + Send>>;

/// Sends a message of the proxy's upstream (`notifications/cancelled`, a blocked server request's error),
/// from a task of the server.
#[derive(Clone)]
pub(crate) struct CancelUpstream {
    upstream: HttpUpstream,
    headers: HeaderMap,
    session: Option<HeaderValue>,
    tracker: tessera_session::TaskTracker,
    /// How long sending one message may take.
    timeout: std::time::Duration,
}

impl CancelUpstream {
    /// Sends `cancel` from a task of the server, which gives up after the control timeout (a hung upstream
    /// must not hold shutdown).
    pub(crate) fn send(self, cancel: Message) {
        let timeout = self.timeout;
        let sending = async move {
            let mut headers = self.headers;
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(r) = self
                .upstream
                .send(
                    Method::POST,
                    &headers,
                    self.session.as_ref(),
                    cancel.into_bytes(),
                )
                .await
            {
                let _ = r.into_body().collect().await;
            }
        };
        self.tracker.clone().spawn(async move {
            if tokio::time::timeout(timeout, sending).await.is_err() {
                tracing::debug!("a message of the proxy's to the upstream timed out");
            }
        });
    }
}

/// The relay of one response body.
struct Relay {
    body: Option<DataStream>,
    inspector: Inspector,
    waiter: Option<WaitFuture>,
    /// Withdraws the request when the relay is dropped (the client went away); disarmed by the response.
    forget: Option<Withdraw>,
    cancel: Option<CancelUpstream>,
    sent_any: bool,
    sse: bool,
    /// The client's request this POST carried (its own id).
    request: Option<Id>,
}

enum Step {
    Chunk(Option<Result<Bytes, hyper::Error>>),
    Outcome(Result<Message, Option<Expired>>),
}

impl Relay {
    /// The body ended while its request was unanswered and a message had been left out of it (over the
    /// message limit, which rules cannot see whole, or a held JSON body a rule blocked): most likely the
    /// response. The client gets an error now — an event on an SSE body, the body itself for JSON —
    /// instead of waiting for the deadline; `None` if the request was answered meanwhile.
    fn response_left_out(&mut self) -> Option<Bytes> {
        let why = self.inspector.left_out()?;
        self.waiter.as_ref()?;
        let id = self.request.as_ref()?;
        if !self.forget.as_mut()?.claim() {
            return None;
        }
        self.waiter = None;
        let text = match why {
            LeftOut::Oversized => {
                "the server's answer was over the proxy's message limit and was left out"
            }
            LeftOut::Blocked => "the server's answer was blocked by an interception rule",
        };
        let reply = Message::error_reply(Some(id), PROXY_ERROR, text);
        Some(if self.sse {
            sse::message_event(&reply.line_safe(), None)
        } else {
            reply.into_bytes()
        })
    }

    fn into_stream(
        mut self,
        body: DataStream,
    ) -> impl futures_util::Stream<Item = Result<Bytes, hyper::Error>> + Send {
        self.body = Some(body);
        futures_util::stream::unfold(self, |mut relay| async move {
            loop {
                let body = relay.body.as_mut()?;
                let step = match relay.waiter.as_mut() {
                    Some(waiter) => tokio::select! {
                        chunk = body.next() => Step::Chunk(chunk),
                        outcome = waiter => Step::Outcome(outcome),
                    },
                    None => Step::Chunk(body.next().await),
                };
                match step {
                    Step::Chunk(Some(Ok(chunk))) => {
                        let chunk = relay.inspector.pass(chunk);
                        if chunk.is_empty() {
                            continue;
                        }
                        relay.sent_any = true;
                        return Some((Ok(chunk), relay));
                    }
                    Step::Chunk(Some(Err(e))) => {
                        relay.body = None;
                        return Some((Err(e), relay));
                    }
                    Step::Chunk(None) => {
                        relay.body = None;
                        let mut rest = BytesMut::from(relay.inspector.finish());
                        if let Some(error) = relay.response_left_out() {
                            rest.extend_from_slice(&error);
                        }
                        if rest.is_empty() {
                            return None;
                        }
                        return Some((Ok(rest.freeze()), relay));
                    }
                    Step::Outcome(Ok(_response)) => {
                        relay.waiter = None;
                        if let Some(forget) = relay.forget.as_mut() {
                            forget.disarm();
                        }
                    }
                    Step::Outcome(Err(None)) => return None,
                    Step::Outcome(Err(Some(expired))) => {
                        metrics::expired();
                        relay.body = None;
                        if let Some(cancel) = relay.cancel.take() {
                            cancel.send(expired.cancel);
                        }
                        let last = if relay.sse {
                            sse::message_event(&expired.reply.line_safe(), None)
                        } else if !relay.sent_any {
                            expired.reply.into_bytes()
                        } else {
                            return None;
                        };
                        return Some((Ok(last), relay));
                    }
                }
            }
        })
    }
}

#[cfg(test)]
impl CancelUpstream {
    /// Replies to `upstream` with no headers and no session: for tests of what reads the responses.
    pub(crate) fn for_test(upstream: HttpUpstream) -> Self {
        CancelUpstream {
            upstream,
            headers: HeaderMap::new(),
            session: None,
            tracker: tessera_session::TaskTracker::new(),
            timeout: std::time::Duration::from_secs(5),
        }
    }
}
