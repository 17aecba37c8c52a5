//! # tessera-mcp
//!
//! A multi-session proxy for the Model Context Protocol, built on the session runtime (`tessera-session`).
//!
//! | module | what it is |
//! |---|---|
//! | [`jsonrpc`] | the JSON-RPC envelope: raw bytes kept, id/method/kind parsed through a borrowed view |
//! | [`lines`] | newline-delimited framing with a line-size limit (the stdio transport) |
//! | [`session`] | MCP sessions on the runtime: correlation by (session, direction, id), limits, deadlines, negotiated version, frame metadata and tags |
//! | [`pipe`] | this process's stdin/stdout as non-blocking pipes on the reactor (no blocking-pool hand-off per message) |
//! | [`stdio`] | the stdio proxy: a client's byte streams on one side, a child server on the other |
//! | [`http`] | the Streamable HTTP front: POST/GET/DELETE, sessions mapped to upstream sessions, version and Origin checks |
//! | [`upstream`] | upstream servers: a child process ([`upstream::child`]) or a remote HTTP server ([`upstream::http`]) |
//! | [`connect`] | stdio on one side, a remote Streamable HTTP server on the other (`tessera mcp connect`) |
//! | [`progress`] | progress tokens, rewritten byte for byte, and routes to a request's response stream |
//! | [`rules`] | interception rules (method, direction, tool, regexes, JSON pointer values, session tags → block, log, tag) from a JSON file |
//! | [`tape`] | recordings as JSON lines, with redaction |
//!
//! Messages are forwarded as the bytes they came as; the proxy writes only its own replies (limit and
//! timeout errors, parse errors) and `notifications/cancelled`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod connect;
mod deadlines;
pub mod error;
pub mod http;
pub mod jsonrpc;
pub mod lines;
pub mod metrics;
pub mod outbox;
pub mod pipe;
pub mod progress;
pub mod rules;
pub mod session;
pub mod stdio;
pub mod tape;
pub mod upstream;

pub use error::McpError;
pub use jsonrpc::{Id, Kind, Message};
pub use session::{Direction, FrameMeta, McpConfig, McpSession, Negotiated, Sessions, Tags};
