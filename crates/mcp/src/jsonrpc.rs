//! The JSON-RPC 2.0 envelope, and nothing else: no I/O, no state, so it can be fuzzed on its own.
//!
//! A [`Message`] keeps the bytes it arrived as and forwards exactly those: ids, unknown fields, `_meta` and
//! key order pass through untouched. Parsing reads only what a proxy needs — the id (kept as its raw JSON
//! text), the method, and whether the message is a request, a notification or a response — through a
//! borrowed view of the bytes ([`serde_json::value::RawValue`]), so nothing else is decoded or copied.
//!
//! Messages the proxy writes itself (error replies, `notifications/cancelled`) are built by
//! [`Message::error_reply`] and [`Message::cancelled`].

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// JSON-RPC: the bytes are not JSON.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC: JSON, but not a valid request.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC: the method does not exist.
pub const METHOD_NOT_FOUND: i32 = -32601;
/// JSON-RPC: invalid params (also MCP's "unsupported protocol version" before 2026-07-28).
pub const INVALID_PARAMS: i32 = -32602;
/// JSON-RPC: internal error.
pub const INTERNAL_ERROR: i32 = -32603;
/// Implementation-defined server error used by the proxy for its own refusals (limits, timeouts, a lost
/// upstream). `-32000` is in the legacy range that every revision still allows.
pub const PROXY_ERROR: i32 = -32000;

/// Most elements the proxy takes in one JSON-RPC batch.
pub const MAX_BATCH: usize = 256;

/// A JSON-RPC id, kept as its raw JSON text (`1`, `"abc"`), so it is echoed exactly as the sender wrote it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Id(Box<str>);

impl Id {
    /// Validates raw JSON id text: a JSON string or number.
    pub fn from_raw(raw: &str) -> Option<Id> {
        let raw = raw.trim();
        match raw.as_bytes().first()? {
            b'"' | b'-' | b'0'..=b'9' => Some(Id(raw.into())),
            _ => None,
        }
    }

    /// The id as raw JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// A numeric id.
    pub fn number(n: i64) -> Id {
        Id(n.to_string().into())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.0)
    }
}

/// What a message is, as far as a proxy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A request: it has a method and an id, and expects a response.
    Request {
        /// Its id.
        id: Id,
        /// Its method.
        method: Box<str>,
    },
    /// A notification: a method and no id.
    Notification {
        /// Its method.
        method: Box<str>,
    },
    /// A response: a result or an error for the request with this id (`None` for `"id": null`).
    Response {
        /// The id of the request it answers.
        id: Option<Id>,
        /// `Some(code)` for an error response.
        error_code: Option<i64>,
    },
    /// A JSON-RPC batch (a JSON array; allowed only in 2025-03-26). The proxies split it into its elements
    /// ([`Message::batch_elements`]) and correlate each.
    Batch,
}

/// Why bytes are not a JSON-RPC message.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (`-32700`).
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not a JSON-RPC 2.0 message (`-32600`); the id, if one could be read, to answer with.
    #[error("not a JSON-RPC 2.0 message: {reason}")]
    Invalid {
        /// The id to answer with, if the message had a usable one.
        id: Option<Id>,
        /// What is wrong.
        reason: &'static str,
    },
}

impl ParseError {
    /// The JSON-RPC error code for this failure.
    pub fn code(&self) -> i32 {
        match self {
            ParseError::Json(_) => PARSE_ERROR,
            ParseError::Invalid { .. } => INVALID_REQUEST,
        }
    }

    /// The error reply to send to whoever sent the bad bytes.
    pub fn reply(&self) -> Message {
        match self {
            ParseError::Json(_) => Message::error_reply(None, PARSE_ERROR, "Parse error"),
            ParseError::Invalid { id, reason } => Message::error_reply(
                id.as_ref(),
                INVALID_REQUEST,
                &format!("Invalid Request: {reason}"),
            ),
        }
    }
}

/// A JSON-RPC message: the exact bytes it came as, and the little that was parsed from them.
#[derive(Clone)]
pub struct Message {
    raw: Bytes,
    kind: Kind,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("kind", &self.kind)
            .field("len", &self.raw.len())
            .finish()
    }
}

/// Keeps a field that is present even when its value is `null` (serde's `Option` would fold `null` into
/// "absent").
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The borrowed view parsed out of an object. Unknown fields are skipped, not stored.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
    /// Not kept, only there so that a duplicated `params` is refused like any other duplicated member:
    /// the server's parser would take one copy and the proxy's rules might read the other.
    #[serde(default, rename = "params")]
    _params: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ErrorCode {
    code: i64,
}

impl Message {
    /// Parses `raw` (one JSON-RPC message or batch, without framing). The bytes are kept as they are.
    pub fn parse(raw: Bytes) -> Result<Message, ParseError> {
        let kind = classify(&raw)?;
        Ok(Message { raw, kind })
    }

    /// What the message is.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The exact bytes of the message.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The message's bytes, consuming it.
    pub fn into_bytes(self) -> Bytes {
        self.raw
    }

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            Kind::Request { method, .. } | Kind::Notification { method } => Some(method),
            _ => None,
        }
    }

    /// The id of a request or response.
    pub fn id(&self) -> Option<&Id> {
        match &self.kind {
            Kind::Request { id, .. } => Some(id),
            Kind::Response { id, .. } => id.as_ref(),
            _ => None,
        }
    }

    /// True for a request.
    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request { .. })
    }

    /// True for an error response.
    pub fn is_error(&self) -> bool {
        matches!(
            self.kind,
            Kind::Response {
                error_code: Some(_),
                ..
            }
        )
    }

    /// Decodes the `result` member of a response into `T`, reading only the fields `T` names.
    pub fn result<'a, T: Deserialize<'a>>(&'a self) -> Option<T> {
        #[derive(Deserialize)]
        struct R<T> {
            result: T,
        }
        serde_json::from_slice::<R<T>>(&self.raw)
            .ok()
            .map(|r| r.result)
    }

    /// Decodes the `params` member of a request or notification into `T`.
    pub fn params<'a, T: Deserialize<'a>>(&'a self) -> Option<T> {
        #[derive(Deserialize)]
        struct P<T> {
            params: T,
        }
        serde_json::from_slice::<P<T>>(&self.raw)
            .ok()
            .map(|p| p.params)
    }

    /// The bytes with every CR and LF replaced by a space, for newline-delimited framing. In valid JSON these
    /// bytes can only be whitespace between tokens (inside strings they must be escaped), so this changes
    /// nothing but layout; it copies only when the message has them.
    pub fn line_safe(&self) -> Bytes {
        if !self.raw.iter().any(|&b| b == b'\n' || b == b'\r') {
            return self.raw.clone();
        }
        self.raw
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .collect::<Vec<u8>>()
            .into()
    }

    /// The same message with another id: the top-level members are re-emitted in their order, every value
    /// but the id's byte for byte. Used where the proxy must remap ids (many clients sharing one upstream).
    /// `None` for a message without an id or a batch.
    pub fn with_id(&self, id: &Id) -> Option<Message> {
        self.id()?;
        let Ordered(members) = serde_json::from_slice::<Ordered<'_>>(&self.raw).ok()?;
        let mut out = String::with_capacity(self.raw.len() + 16);
        out.push('{');
        for (i, (name, value)) in members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::Value::from(name.as_ref()).to_string());
            out.push(':');
            out.push_str(if name == "id" {
                id.as_json()
            } else {
                value.get()
            });
        }
        out.push('}');
        Message::parse(Bytes::from(out)).ok()
    }

    /// The elements of a batch, each parsed on its own (its bytes kept); an element that is not a JSON-RPC
    /// message (or is itself a batch) is `Err` with the error reply JSON-RPC asks for (id null, or its id).
    /// `None` for a message that is not a batch or a batch of more than `max` elements.
    pub fn batch_elements(&self, max: usize) -> Option<Vec<Result<Message, Message>>> {
        if !matches!(self.kind, Kind::Batch) {
            return None;
        }
        let elements: Vec<&RawValue> = serde_json::from_slice(&self.raw).ok()?;
        if elements.len() > max {
            return None;
        }
        Some(
            elements
                .into_iter()
                .map(|raw| {
                    let text = raw.get().as_bytes();
                    // The element's bytes are a slice of the batch's: shared, not copied.
                    let start = (text.as_ptr() as usize).wrapping_sub(self.raw.as_ptr() as usize);
                    let bytes = match start.checked_add(text.len()) {
                        Some(end) if end <= self.raw.len() => self.raw.slice(start..end),
                        _ => Bytes::copy_from_slice(text),
                    };
                    match Message::parse(bytes) {
                        Ok(m) if matches!(m.kind(), Kind::Batch) => Err(Message::error_reply(
                            None,
                            INVALID_REQUEST,
                            "Invalid Request: nested batch",
                        )),
                        Ok(m) => Ok(m),
                        Err(e) => Err(e.reply()),
                    }
                })
                .collect(),
        )
    }

    /// A batch of these messages, each element's bytes as they are.
    pub fn batch(messages: &[Message]) -> Message {
        let mut out =
            Vec::with_capacity(messages.iter().map(|m| m.raw.len() + 1).sum::<usize>() + 2);
        out.push(b'[');
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&m.raw);
        }
        out.push(b']');
        Message {
            raw: out.into(),
            kind: Kind::Batch,
        }
    }

    /// An error response written by the proxy itself. `id` is `None` when the request's id is unknown.
    pub fn error_reply(id: Option<&Id>, code: i32, message: &str) -> Message {
        Self::error_reply_with_data(id, code, message, None)
    }

    /// An error response with a `data` member.
    pub fn error_reply_with_data(
        id: Option<&Id>,
        code: i32,
        message: &str,
        data: Option<&serde_json::Value>,
    ) -> Message {
        let id_text = id.map_or("null", Id::as_json);
        let message = serde_json::Value::from(message);
        let text = match data {
            Some(data) => format!(
                r#"{{"jsonrpc":"2.0","id":{id_text},"error":{{"code":{code},"message":{message},"data":{data}}}}}"#
            ),
            None => format!(
                r#"{{"jsonrpc":"2.0","id":{id_text},"error":{{"code":{code},"message":{message}}}}}"#
            ),
        };
        Message {
            raw: text.into(),
            kind: Kind::Response {
                id: id.cloned(),
                error_code: Some(i64::from(code)),
            },
        }
    }

    /// `notifications/cancelled` for the request with this id, with a reason.
    pub fn cancelled(id: &Id, reason: &str) -> Message {
        let reason = serde_json::Value::from(reason);
        let text = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":{reason}}}}}"#
        );
        Message {
            raw: text.into(),
            kind: Kind::Notification {
                method: "notifications/cancelled".into(),
            },
        }
    }
}

/// A JSON object's members in their order, values kept raw.
struct Ordered<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Ordered<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Ordered<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Ordered<'a>, M::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<Cow<'a, str>, &'a RawValue>()? {
                    members.push(entry);
                }
                Ok(Ordered(members))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

fn classify(raw: &[u8]) -> Result<Kind, ParseError> {
    let first = raw.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_slice(raw)?;
            if items.is_empty() {
                return Err(ParseError::Invalid {
                    id: None,
                    reason: "an empty batch",
                });
            }
            return Ok(Kind::Batch);
        }
        Some(b'{') => {}
        _ => {
            // Let serde say precisely why this is not JSON, or report a JSON non-object as invalid.
            serde_json::from_slice::<&RawValue>(raw)?;
            return Err(ParseError::Invalid {
                id: None,
                reason: "not a JSON object",
            });
        }
    }
    let probe: Probe<'_> = match serde_json::from_slice(raw) {
        Ok(p) => p,
        Err(e) if e.is_syntax() || e.is_eof() => return Err(ParseError::Json(e)),
        Err(e) if e.to_string().starts_with("duplicate field") => {
            return Err(ParseError::Invalid {
                id: None,
                reason: "a member appears twice",
            });
        }
        Err(_) => {
            return Err(ParseError::Invalid {
                id: None,
                reason: "a member has the wrong type",
            });
        }
    };
    let id = match probe.id {
        None => None,
        Some(raw_id) if raw_id.get() == "null" => None,
        Some(raw_id) => match Id::from_raw(raw_id.get()) {
            Some(id) => Some(id),
            None => {
                return Err(ParseError::Invalid {
                    id: None,
                    reason: "the id is neither a string nor a number",
                });
            }
        },
    };
    if probe.jsonrpc.as_deref() != Some("2.0") {
        return Err(ParseError::Invalid {
            id,
            reason: "jsonrpc is not \"2.0\"",
        });
    }
    match (probe.method, probe.result, probe.error) {
        (Some(method), None, None) => Ok(match id {
            Some(id) => Kind::Request {
                id,
                method: method.into(),
            },
            None => Kind::Notification {
                method: method.into(),
            },
        }),
        (None, Some(_), None) => Ok(Kind::Response {
            id,
            error_code: None,
        }),
        (None, None, Some(error)) => {
            let code = serde_json::from_str::<ErrorCode>(error.get())
                .map_or(INTERNAL_ERROR.into(), |e| e.code);
            Ok(Kind::Response {
                id,
                error_code: Some(code),
            })
        }
        _ => Err(ParseError::Invalid {
            id,
            reason: "needs exactly one of method, result, error",
        }),
    }
}

#[cfg(test)]
mod tests;
