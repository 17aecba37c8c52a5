//! Progress tokens and listen subscription ids: where they sit in a message, rewriting one byte for byte,
//! and the routes that send a child's `notifications/progress` (or a 2026-07-28 listen notification) to the
//! HTTP response stream of the request it belongs to.
//!
//! On stdio a server says which request a progress notification is about only through the token the
//! request carried in `params._meta.progressToken` (the notification repeats it as `params.progressToken`).
//! Over HTTP the notification belongs on that request's response stream (2025-11-25 and 2026-07-28), so a
//! proxy in front of a stdio server routes by token. Where many clients share one child (2026-07-28), two
//! clients may pick the same token: the proxy then gives each request a token of its own and restores the
//! client's on the way back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::jsonrpc::Message;

#[derive(Deserialize)]
struct Outer<'a> {
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, rename = "_meta")]
    meta: Option<&'a RawValue>,
    #[serde(borrow, rename = "progressToken")]
    token: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow, rename = "progressToken")]
    token: Option<&'a RawValue>,
    #[serde(borrow, rename = "io.modelcontextprotocol/subscriptionId")]
    subscription: Option<&'a RawValue>,
    #[serde(borrow, rename = "io.modelcontextprotocol/logLevel")]
    log_level: Option<&'a RawValue>,
}

/// True for a 2026-07-28 request that asked for log messages (`_meta["io.modelcontextprotocol/logLevel"]`).
pub fn wants_logs(message: &Message) -> bool {
    let parse = || -> Option<bool> {
        let outer: Outer<'_> = serde_json::from_slice(message.raw()).ok()?;
        let params: Params<'_> = serde_json::from_str(outer.params?.get()).ok()?;
        let meta: Meta<'_> = serde_json::from_str(params.meta?.get()).ok()?;
        Some(meta.log_level.is_some())
    };
    message.is_request() && parse().unwrap_or(false)
}

/// The route key of a request that asked for log messages (its id as the child saw it).
pub fn log_key(id: &str) -> String {
    format!("l{id}")
}

/// The raw JSON of a listen notification's `params._meta["io.modelcontextprotocol/subscriptionId"]` (the
/// JSON-RPC id of the `subscriptions/listen` request it belongs to, 2026-07-28).
pub fn subscription_id(message: &Message) -> Option<&str> {
    if message.is_request() {
        return None;
    }
    let outer: Outer<'_> = serde_json::from_slice(message.raw()).ok()?;
    let params: Params<'_> = serde_json::from_str(outer.params?.get()).ok()?;
    let meta: Meta<'_> = serde_json::from_str(params.meta?.get()).ok()?;
    Some(meta.subscription?.get())
}

/// The key a notification is routed by: its progress token, or its subscription id.
fn route_key(message: &Message) -> Option<(String, &str)> {
    if let Some(token) = token(message) {
        return Some((format!("p{token}"), token));
    }
    subscription_id(message).map(|id| (format!("s{id}"), id))
}

/// The route key of a progress token (raw JSON).
pub fn progress_key(token: &str) -> String {
    format!("p{token}")
}

/// The route key of a listen request's id (raw JSON).
pub fn subscription_key(id: &str) -> String {
    format!("s{id}")
}

/// `message` with the bytes of `old` (a slice of its own bytes) replaced by `new`.
fn splice(message: &Message, old: &str, new: &str) -> Option<Message> {
    let raw = message.raw();
    let start = (old.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
    let end = start.checked_add(old.len())?;
    if end > raw.len() {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len() - old.len() + new.len());
    out.extend_from_slice(&raw[..start]);
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(&raw[end..]);
    Message::parse(Bytes::from(out)).ok()
}

/// The raw JSON of a progress token: a request's `params._meta.progressToken`, or a
/// `notifications/progress`'s `params.progressToken`.
pub fn token(message: &Message) -> Option<&str> {
    let outer: Outer<'_> = serde_json::from_slice(message.raw()).ok()?;
    let params: Params<'_> = serde_json::from_str(outer.params?.get()).ok()?;
    let raw = if message.is_request() {
        let meta: Meta<'_> = serde_json::from_str(params.meta?.get()).ok()?;
        meta.token?
    } else if message.method() == Some("notifications/progress") {
        params.token?
    } else {
        return None;
    };
    // Only strings and integers are tokens; anything else is not routed.
    let text = raw.get();
    (text.starts_with('"') || text.bytes().all(|b| b.is_ascii_digit() || b == b'-')).then_some(text)
}

/// The same message with its progress token replaced by `token_json` (raw JSON), every other byte as it
/// was. `None` when the message has no token.
pub fn with_token(message: &Message, token_json: &str) -> Option<Message> {
    splice(message, token(message)?, token_json)
}

/// Where a routed notification goes: the response stream's queue, and the client's own token when the
/// proxy replaced it.
struct Route {
    to: mpsc::Sender<Message>,
    client_token: Option<Box<str>>,
}

/// Progress routes of one upstream (a session's child, or the shared child), keyed by the token the
/// upstream sees. Bounded: past `limit` routes a request simply gets none (its progress goes where
/// unrouted messages go).
#[derive(Clone)]
pub struct Routes {
    map: Arc<Mutex<HashMap<Box<str>, Route>>>,
    limit: usize,
}

/// Removes its route when the request's response stream ends (answered, or the client went away).
pub struct RouteGuard {
    routes: Routes,
    token: Box<str>,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.routes
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.token);
    }
}

impl Routes {
    /// A log message names no request on stdio. A 2026-07-28 server may log only for a request that set a
    /// log level, so while exactly one such request is in flight the message can only be its; with none or
    /// several, it is not routed.
    fn deliver_log(&self, message: Message) -> Result<(), Message> {
        if message.method() != Some("notifications/message") {
            return Err(message);
        }
        let to = {
            let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            let mut candidates = map.iter().filter(|(k, _)| k.starts_with('l'));
            match (candidates.next(), candidates.next()) {
                (Some((_, route)), None) => route.to.clone(),
                _ => return Err(message),
            }
        };
        to.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
        })
    }

    /// An empty table holding at most `limit` routes.
    pub fn new(limit: usize) -> Routes {
        Routes {
            map: Arc::default(),
            limit,
        }
    }

    /// Routes notifications with the route key `key` ([`progress_key`], [`subscription_key`]) to `to`,
    /// putting back the client's own value (raw JSON) when given. `None` when the key is already routed or
    /// the table is full.
    pub fn add(
        &self,
        key: &str,
        client_token: Option<&str>,
        to: mpsc::Sender<Message>,
    ) -> Option<RouteGuard> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.limit || map.contains_key(key) {
            return None;
        }
        map.insert(
            key.into(),
            Route {
                to,
                client_token: client_token.map(Into::into),
            },
        );
        Some(RouteGuard {
            routes: self.clone(),
            token: key.into(),
        })
    }

    /// Delivers a `notifications/progress`, or a listen notification, to its request's stream. Gives the
    /// message back when no route takes it (no key, no route, or the stream's queue full or closed).
    pub fn deliver(&self, message: Message) -> Result<(), Message> {
        let Some((key, value)) = route_key(&message) else {
            return self.deliver_log(message);
        };
        let (to, restored) = {
            let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(route) = map.get(key.as_str()) else {
                return Err(message);
            };
            let restored = match &route.client_token {
                Some(client) => splice(&message, value, client),
                None => None,
            };
            (route.to.clone(), restored)
        };
        let out = restored.unwrap_or(message);
        to.try_send(out).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> Message {
        Message::parse(Bytes::from(text.to_owned())).unwrap()
    }

    #[test]
    fn token_of_a_request_and_a_notification() {
        let req = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"t-1"}}}"#,
        );
        assert_eq!(token(&req), Some(r#""t-1""#));
        let note = msg(
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":1}}"#,
        );
        assert_eq!(token(&note), Some("7"));
        let none = msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#);
        assert_eq!(token(&none), None);
        let object = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"a","params":{"_meta":{"progressToken":{"x":1}}}}"#,
        );
        assert_eq!(token(&object), None);
    }

    #[test]
    fn rewriting_keeps_every_other_byte() {
        let text = r#"{"id":1, "jsonrpc":"2.0","method":"tools/call","params":{"_meta":{"progressToken":"abc","z":1},"name":"n"},"x":[1]}"#;
        let out = with_token(&msg(text), r#""p-9""#).unwrap();
        assert_eq!(
            std::str::from_utf8(out.raw()).unwrap(),
            text.replace(r#""abc""#, r#""p-9""#)
        );
    }

    #[test]
    fn subscription_ids_are_found_and_rewritten() {
        let note = msg(
            r#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":17},"x":1}}"#,
        );
        assert_eq!(subscription_id(&note), Some("17"));
        let (key, value) = route_key(&note).unwrap();
        assert_eq!(key, subscription_key("17"));
        let back = splice(&note, value, r#""client-1""#).unwrap();
        assert_eq!(subscription_id(&back), Some(r#""client-1""#));
    }

    #[tokio::test]
    async fn routes_restore_the_client_token_and_unroute_on_drop() {
        let routes = Routes::new(1);
        let (tx, mut rx) = mpsc::channel(4);
        let guard = routes
            .add(&progress_key(r#""p-1""#), Some("42"), tx.clone())
            .unwrap();
        assert!(
            routes.add(&progress_key(r#""p-2""#), None, tx).is_none(),
            "limit of one route"
        );
        let note = msg(
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p-1","progress":1}}"#,
        );
        routes.deliver(note.clone()).unwrap();
        let got = rx.recv().await.unwrap();
        assert_eq!(token(&got), Some("42"));
        drop(guard);
        assert!(routes.deliver(note).is_err());
    }
}
