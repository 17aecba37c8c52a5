//! The prover's request: URL, headers, which header values are hidden (`sensitive`) or hidden from TEE_K
//! but proven to the verifier (`sensitive_proof`), what of the response to reveal, and the options TEE_K is
//! asked for.

use super::{ClientError, Reveal};
use crate::proto::{RangeType, RequestRange};
use crate::suite::{CipherSuite, TlsVersion};
use std::net::SocketAddr;
use std::time::Duration;

/// What to prove: build with [`ProveRequest::get`] and the builder methods.
#[derive(Clone)]
pub struct ProveRequest {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) target: String,
    pub(crate) method: &'static str,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) hidden: Vec<String>,
    pub(crate) proof: Vec<String>,
    pub(crate) params: Vec<String>,
    pub(crate) reveal: Vec<Reveal>,
    pub(crate) nonce: Vec<u8>,
    pub(crate) force_version: Option<TlsVersion>,
    pub(crate) force_suite: Option<CipherSuite>,
    pub(crate) connect_to: Option<SocketAddr>,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for ProveRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be secrets: names only.
        f.debug_struct("ProveRequest")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("target", &self.target)
            .field("method", &self.method)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("hidden", &self.hidden)
            .field("proof", &self.proof)
            .field("params", &self.params)
            .field("reveal", &self.reveal)
            .finish_non_exhaustive()
    }
}

const RESERVED: [&str; 4] = ["host", "connection", "accept-encoding", "content-length"];

impl ProveRequest {
    /// A GET of `url` (`https://host[:port]/path?query`).
    pub fn get(url: &str) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::Request(format!("{url}: {why}"));
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("only https:// URLs"))?;
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
            None => (authority, 443),
        };
        if host.is_empty() || port == 0 {
            return Err(bad("no host"));
        }
        if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad("spaces or control bytes in the path"));
        }
        Ok(ProveRequest {
            host: host.to_ascii_lowercase(),
            port,
            target,
            method: "GET",
            body: Vec::new(),
            headers: Vec::new(),
            hidden: Vec::new(),
            proof: Vec::new(),
            params: Vec::new(),
            reveal: Vec::new(),
            nonce: Vec::new(),
            force_version: None,
            force_suite: None,
            connect_to: None,
            timeout: Duration::from_secs(60),
        })
    }

    /// Makes it a POST with this body.
    pub fn post(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.method = "POST";
        self.body = body.into();
        self
    }

    /// Adds a header (`Host`, `Connection`, `Accept-Encoding`, `Content-Length` are set by the client).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Hides this header's value forever (`sensitive`): neither TEE_K nor the verifier sees it.
    pub fn hide_header(mut self, name: impl Into<String>) -> Self {
        self.hidden.push(name.into());
        self
    }

    /// Hides this header's value from TEE_K but reveals it to the verifier through T_OUTPUT
    /// (`sensitive_proof`).
    pub fn proof_header(mut self, name: impl Into<String>) -> Self {
        self.proof.push(name.into());
        self
    }

    /// Hides the value of this query parameter forever (`sensitive`). Its value must be printable ASCII
    /// without space, `&` or `#` (percent-encode the rest): TEE_T checks that, so it cannot end the request
    /// line or add a parameter.
    pub fn hide_param(mut self, name: impl Into<String>) -> Self {
        self.params.push(name.into());
        self
    }

    /// Reveals this part of the response (by default everything is revealed; with any selection, only the
    /// status line, the header end and the selections are).
    pub fn reveal(mut self, reveal: Reveal) -> Self {
        self.reveal.push(reveal);
        self
    }

    /// The verifier's nonce, signed into both outputs (at most 64 bytes).
    pub fn nonce(mut self, nonce: impl Into<Vec<u8>>) -> Self {
        self.nonce = nonce.into();
        self
    }

    /// Asks TEE_K for this TLS version only.
    pub fn force_version(mut self, version: TlsVersion) -> Self {
        self.force_version = Some(version);
        self
    }

    /// Asks TEE_K for this cipher suite only.
    pub fn force_suite(mut self, suite: CipherSuite) -> Self {
        self.force_suite = Some(suite);
        self
    }

    /// Opens the TCP connection to this address instead of resolving the host (the certificate is still
    /// checked against the host name): for test sites on loopback.
    pub fn connect_to(mut self, addr: SocketAddr) -> Self {
        self.connect_to = Some(addr);
        self
    }

    /// Overall time limit of the proof (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP/1.1 request bytes and the hidden ranges in them.
    pub(crate) fn build(&self) -> Result<(Vec<u8>, Vec<RequestRange>), ClientError> {
        let host = if self.port == 443 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\n",
            self.method, self.target
        )
        .into_bytes();
        let mut ranges = Vec::new();
        let target_at = self.method.len() + 1;
        for name in &self.params {
            let query_at = self.target.find('?').ok_or_else(|| {
                ClientError::Request(format!("no query parameter {name} to hide"))
            })?;
            let mut at = query_at + 1;
            let mut found = false;
            for pair in self.target[at..].split('&') {
                if let Some(value) = pair
                    .strip_prefix(name.as_str())
                    .and_then(|r| r.strip_prefix('='))
                    && !value.is_empty()
                {
                    ranges.push(RequestRange {
                        start: (target_at + at + name.len() + 1) as u32,
                        length: value.len() as u32,
                        r#type: RangeType::Sensitive as i32,
                    });
                    found = true;
                }
                at += pair.len() + 1;
            }
            if !found {
                return Err(ClientError::Request(format!(
                    "no query parameter {name} to hide"
                )));
            }
        }
        let mut used = vec![false; self.hidden.len() + self.proof.len()];
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if RESERVED.contains(&lower.as_str()) {
                return Err(ClientError::Request(format!(
                    "header {name} is set by the client"
                )));
            }
            let clean = |s: &str| {
                !s.is_empty() && s.bytes().all(|b| b == b'\t' || (b >= b' ' && b != 0x7f))
            };
            if !clean(name) || name.contains(':') || !clean(value) {
                return Err(ClientError::Request(format!("bad header {name}")));
            }
            out.extend_from_slice(format!("{name}: ").as_bytes());
            let kind = self
                .hidden
                .iter()
                .position(|h| h.eq_ignore_ascii_case(name))
                .map(|i| (i, RangeType::Sensitive))
                .or_else(|| {
                    self.proof
                        .iter()
                        .position(|h| h.eq_ignore_ascii_case(name))
                        .map(|i| (self.hidden.len() + i, RangeType::SensitiveProof))
                });
            if let Some((i, kind)) = kind {
                used[i] = true;
                ranges.push(RequestRange {
                    start: out.len() as u32,
                    length: value.len() as u32,
                    r#type: kind as i32,
                });
            }
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(i) = used.iter().position(|u| !u) {
            let name = self
                .hidden
                .iter()
                .chain(&self.proof)
                .nth(i)
                .cloned()
                .unwrap_or_default();
            return Err(ClientError::Request(format!("no header {name} to hide")));
        }
        if self.method == "POST" {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        ranges.sort_by_key(|r| r.start);
        out.extend_from_slice(b"Connection: close\r\nAccept-Encoding: identity\r\n\r\n");
        out.extend_from_slice(&self.body);
        Ok((out, ranges))
    }
}
