//! Resumable POST response streams (2025-11-25) with a command upstream. Since 2025-11-25 a disconnect is
//! not a cancel: a client whose POST stream broke reconnects with GET and `Last-Event-ID`, and the server
//! replays that stream. So for a session of 2025-11-25 or later, a request the proxy answers as an SSE
//! stream (see [`super::streamed`]) is driven by a task of the session, not by the HTTP body: its events
//! (ids `<stream>-<n>`, opened by a priming event `<stream>-0` with `retry`) go into a bounded log that
//! the POST's body — or a later GET naming one of its ids — reads from.
//!
//! Bounds: at most [`MAX_STREAMS`] streams per session (past that, a request gets a plain stream), at most
//! [`MAX_EVENTS`] events kept per stream (the oldest go; a GET after one of them gets the rest it can).
//! A stream nobody reads for the resume window is given up: its request is withdrawn, as a disconnect was
//! before. A finished stream is kept for one window for late readers, then removed.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, mpsc};

use super::sse;
use crate::jsonrpc::{Id, Message, PROXY_ERROR};
use crate::progress::RouteGuard;
use crate::session::McpSession;

/// Most resumable streams one session keeps.
pub const MAX_STREAMS: usize = 64;
/// Most events kept per stream.
pub const MAX_EVENTS: usize = 256;

/// One stream's events and state.
#[derive(Default)]
struct Log {
    /// (event number, encoded event), numbers from 1.
    events: Mutex<VecDeque<(u64, Bytes)>>,
    done: AtomicBool,
    changed: Notify,
    readers: AtomicUsize,
    readers_changed: Notify,
}

impl Log {
    fn push(&self, n: u64, event: Bytes) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if events.len() == MAX_EVENTS {
            events.pop_front();
        }
        events.push_back((n, event));
        drop(events);
        self.changed.notify_waiters();
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Completes once nobody has read the stream for `window`.
    async fn abandoned(&self, window: Duration) {
        loop {
            let changed = self.readers_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.readers.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(window) => return,
                    _ = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// Counts a reader while its body lives.
struct Reader {
    log: Arc<Log>,
    after: u64,
}

impl Reader {
    fn new(log: Arc<Log>, after: u64) -> Reader {
        log.readers.fetch_add(1, Ordering::AcqRel);
        log.readers_changed.notify_waiters();
        Reader { log, after }
    }

    /// The events after the cursor, or `None` once the stream is done and read.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let changed = self.log.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let done = self.log.done.load(Ordering::Acquire);
            {
                let events = self
                    .log
                    .events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let mut out = BytesMut::new();
                let after = self.after;
                for (n, event) in events.iter().filter(|(n, _)| *n > after) {
                    out.extend_from_slice(event);
                    self.after = *n;
                }
                if !out.is_empty() {
                    return Some(out.freeze());
                }
            }
            if done {
                return None;
            }
            changed.await;
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.log.readers.fetch_sub(1, Ordering::AcqRel);
        self.log.readers_changed.notify_waiters();
    }
}

/// Writes one stream's events, and finishes the stream when dropped (however its task ends).
struct Driver {
    log: Arc<Log>,
    stream: u64,
    /// Events so far.
    n: u64,
    /// The request still unanswered: dropped with it, the stream ends with an error event for it (the
    /// session ended, as a plain stream says it).
    request: Option<Id>,
}

impl Driver {
    fn push(&mut self, message: &Message) {
        self.n += 1;
        let id = format!("{}-{}", self.stream, self.n);
        self.log
            .push(self.n, sse::message_event(&message.line_safe(), Some(&id)));
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            let error = Message::error_reply(
                Some(&request),
                PROXY_ERROR,
                "the session ended before the response",
            );
            self.push(&error);
        }
        self.log.finish();
    }
}

/// A session's resumable streams.
#[derive(Default)]
pub(crate) struct Streams {
    inner: Mutex<(u64, HashMap<u64, Arc<Log>>)>,
}

fn body(reader: Reader, first: Option<Bytes>) -> Response {
    let stream = futures_util::stream::unfold((reader, first), |(mut reader, first)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, std::convert::Infallible>(first), (reader, None)));
        }
        let chunk = reader.next().await?;
        Some((Ok(chunk), (reader, None)))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

impl Streams {
    /// Starts a resumable stream for one request: `notes` (its routed notifications) until `outcome` (its
    /// response; `None` for a request its client cancelled, whose stream just ends), driven by a task of `mcp`. `Err` gives the inputs back when the session has no room (or
    /// is ending), for a plain stream instead. `request` is the request's id: if the session ends before
    /// its response, the stream ends with an error event for it.
    #[allow(
        clippy::type_complexity,
        clippy::result_large_err,
        clippy::too_many_arguments
    )]
    pub(crate) fn start<F>(
        self: &Arc<Self>,
        mcp: &McpSession,
        request: Id,
        mut notes: mpsc::Receiver<Message>,
        outcome: F,
        route: RouteGuard,
        window: Duration,
        retry_ms: u64,
    ) -> Result<Response, (mpsc::Receiver<Message>, F, RouteGuard)>
    where
        F: Future<Output = Option<Message>> + Send + 'static,
    {
        let (k, log) = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if inner.1.len() >= MAX_STREAMS {
                return Err((notes, outcome, route));
            }
            inner.0 += 1;
            let k = inner.0;
            let log = Arc::new(Log::default());
            inner.1.insert(k, log.clone());
            (k, log)
        };
        let reader = Reader::new(log.clone(), 0);
        let (streams, driven) = (self.clone(), log.clone());
        // Finishes the stream however the task ends: the session's end drops the task mid-way — or before
        // it ever ran, which is why the driver is made here and moved in — and its readers must not wait
        // for events that will never come.
        let driver = Driver {
            log: driven.clone(),
            stream: k,
            n: 0,
            request: Some(request),
        };
        let task = async move {
            let mut log = driver;
            let _route = route;
            let mut outcome = std::pin::pin!(outcome);
            let finished = loop {
                tokio::select! {
                    biased;
                    Some(note) = notes.recv() => log.push(&note),
                    response = &mut outcome => {
                        while let Ok(note) = notes.try_recv() {
                            log.push(&note);
                        }
                        if let Some(response) = &response {
                            log.push(response);
                        }
                        break true;
                    }
                    // Nobody reads it any more: the request is withdrawn (the outcome, dropped, disarms nothing).
                    () = driven.abandoned(window) => break false,
                }
            };
            log.request = None;
            drop(log);
            if finished {
                // Kept one window for a late reader, then gone.
                driven.abandoned(window).await;
            }
            streams
                .inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .1
                .remove(&k);
        };
        if mcp.session().spawn(task).is_err() {
            self.inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .1
                .remove(&k);
            let response = body(reader, None);
            // The session is ending: the stream ends at once.
            log.finish();
            return Ok(response);
        }
        let priming = sse::priming_event(&format!("{k}-0"), Some(retry_ms));
        Ok(body(reader, Some(priming)))
    }

    /// A GET with `Last-Event-ID: <stream>-<n>`: the rest of that stream, live until its end. `None` when
    /// the id names no stream of this session.
    pub(crate) fn resume(&self, last_event_id: &str) -> Option<Response> {
        let (k, n) = last_event_id.trim().split_once('-')?;
        let (k, n) = (k.parse::<u64>().ok()?, n.parse::<u64>().ok()?);
        let log = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .get(&k)?
            .clone();
        Some(body(Reader::new(log, n), None))
    }
}
