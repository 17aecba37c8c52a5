//! Upstreams: where the proxy sends what clients say — a child process over stdio ([`child`]) or a remote
//! Streamable HTTP server ([`http`]).

pub mod child;
pub mod http;
mod inspect;
