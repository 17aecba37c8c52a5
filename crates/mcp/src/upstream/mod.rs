//! Upstreams: where the proxy sends what clients say.

pub mod child;
