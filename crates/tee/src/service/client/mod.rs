//! The prover's side: [`prove`] owns the TCP connection to the website, relays TEE_K's handshake, sends the
//! redacted request (streams to TEE_T), writes the record TEE_T tagged, reads the response records to EOF
//! and hands them to TEE_T, receives keystreams from TEE_K only after TEE_T verified every tag, reconstructs
//! the response, picks what to reveal, and returns the bundle with both signed outputs.
//!
//! ```no_run
//! # async fn demo(k: tessera_tee::service::TeeEndpoint, t: tessera_tee::service::TeeEndpoint)
//! # -> Result<(), tessera_tee::service::ClientError> {
//! use tessera_tee::service::{ProveRequest, Reveal, prove};
//! let request = ProveRequest::get("https://example.com/account")?
//!     .header("Cookie", "session=s3cr3t")
//!     .hide_header("Cookie")
//!     .reveal(Reveal::JsonPath("$.balance".into()));
//! let proved = prove(&request, &k, &t).await?;
//! println!("{}", String::from_utf8_lossy(&proved.revealed));
//! std::fs::write("proof.json", tessera_tee::proof_file::to_json(&proved.bundle)).ok();
//! # Ok(()) }
//! ```

mod assemble;
mod bundle;
mod peers;
mod request;
mod reveal;

pub use request::ProveRequest;
pub use reveal::{Reveal, RevealError, hidden_ranges, view};

use self::assemble::Assembled;
use self::peers::{Peers, Side};
use super::common::channel_config;
use crate::proto::{
    BatchedEncryptedResponses, Body, BodyType, Bundle, EncryptedResponse, RedactionStreams,
    RequestConnection, ResponseRange, ResponseRedactionSpec, SignedMessage, TcpData, TcpReady,
};
use crate::record::{ContentType, Record, RecordSplitter};
use crate::record_layer::ProtectedPayload;
use crate::redaction::redact_request;
use crate::suite::{CipherSuite, TlsVersion};
use crate::wire::{self, WireSessionId};
use std::collections::HashMap;
use tessera_channel::{Connector, Identity, PublicKey};
use tessera_session::{Registry, RegistryConfig, SecretBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Records per batch sent to TEE_T are cut at about this many bytes.
pub const BATCH_BYTES: usize = 256 * 1024;

/// Largest response the client collects (ciphertext bytes).
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// A TEE the client connects to: its `ws://…/ws` URL and its pinned channel key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeeEndpoint {
    /// e.g. `ws://127.0.0.1:8080/ws`.
    pub url: String,
    /// The channel key (pinned: a server with another key is refused).
    pub key: PublicKey,
}

impl TeeEndpoint {
    /// An endpoint; `addr` may be `host:port` (the `/ws` URL is built) or a full `ws://` URL.
    pub fn new(addr: impl Into<String>, key: PublicKey) -> Self {
        let addr = addr.into();
        let url = if addr.starts_with("ws://") || addr.starts_with("wss://") {
            addr
        } else {
            format!("ws://{addr}/ws")
        };
        TeeEndpoint { url, key }
    }
}

/// Why a proof failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The request cannot be built.
    #[error("request: {0}")]
    Request(String),
    /// A channel to a TEE failed.
    #[error("channel to {0}: {1}")]
    Channel(&'static str, String),
    /// A TEE ended the session, with its reason.
    #[error("{0} ended the session: {1}")]
    Rejected(&'static str, String),
    /// The website connection failed.
    #[error("website: {0}")]
    Website(String),
    /// A TEE broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The response selection failed.
    #[error(transparent)]
    Reveal(#[from] RevealError),
    /// The overall time limit passed.
    #[error("timed out")]
    Timeout,
}

/// A finished proof.
#[derive(Clone)]
pub struct Proved {
    /// Both signed outputs: what `proof_file::to_json` writes and `verify_bundle` checks.
    pub bundle: Bundle,
    /// The whole response plaintext (the prover's own copy).
    pub response: Vec<u8>,
    /// The response as a verifier will see it (hidden bytes as `*`).
    pub revealed: Vec<u8>,
    /// The hidden ranges of the response.
    pub hidden: Vec<ResponseRange>,
    /// The session id both outputs carry.
    pub session_id: WireSessionId,
    /// The negotiated suite.
    pub suite: CipherSuite,
}

impl std::fmt::Debug for Proved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proved")
            .field("response_len", &self.response.len())
            .field("hidden", &self.hidden.len())
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// Proves `request` with TEE_K and TEE_T (each pinned by its key), on channels of its own. The whole proof
/// runs under [`ProveRequest::timeout`]. A program that proves again and again keeps a [`Prover`] instead.
pub async fn prove(
    request: &ProveRequest,
    tee_k: &TeeEndpoint,
    tee_t: &TeeEndpoint,
) -> Result<Proved, ClientError> {
    let mut prover = Prover::new(tee_k.clone(), tee_t.clone());
    let outcome = prover.prove(request).await;
    prover.close().await;
    outcome
}

/// A client of one TEE_K / TEE_T pair that keeps its two channels open between proofs: after a proof the
/// next one starts with `new_session` on the same channels instead of two new channel handshakes (about
/// 1.5 ms of every proof here, a third of a small one). Channels a failed proof leaves behind are dropped,
/// and new ones are opened for the next proof, as they are when the kept ones were closed meanwhile (the
/// TEEs close a channel that waits longer than their idle limit for the next session).
pub struct Prover {
    tee_k: TeeEndpoint,
    tee_t: TeeEndpoint,
    registry: Registry,
    connector: Connector,
    /// The client's channel identity, for the prover's life.
    identity: Identity,
    kept: Option<Peers>,
}

impl std::fmt::Debug for Prover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prover")
            .field("tee_k", &self.tee_k)
            .field("tee_t", &self.tee_t)
            .field("channels_kept", &self.kept.is_some())
            .finish_non_exhaustive()
    }
}

impl Prover {
    /// A prover for this TEE pair; channels are opened by the first proof.
    pub fn new(tee_k: TeeEndpoint, tee_t: TeeEndpoint) -> Self {
        let registry = Registry::new(RegistryConfig::new("tee-client"));
        Prover {
            tee_k,
            tee_t,
            connector: Connector::new(registry.clone(), channel_config()),
            registry,
            identity: Identity::generate(),
            kept: None,
        }
    }

    /// Proves `request` (the whole proof under [`ProveRequest::timeout`]).
    pub async fn prove(&mut self, request: &ProveRequest) -> Result<Proved, ClientError> {
        let kept = self.kept.take();
        let outcome = tokio::time::timeout(request.timeout, run(request, self, kept)).await;
        let (proved, peers) = outcome.map_err(|_| ClientError::Timeout)??;
        self.kept = Some(peers);
        Ok(proved)
    }

    /// Closes the channels and waits (briefly) for them to end. (Dropping a prover closes its channels
    /// too, without waiting.)
    pub async fn close(mut self) {
        if let Some(peers) = self.kept.take() {
            peers.k_tx.close();
            peers.t_tx.close();
        }
        self.registry
            .shutdown(std::time::Duration::from_millis(100))
            .await;
    }
}

/// How long each step of a proof took (logged at debug level: where a proof's time goes).
struct Stages {
    start: std::time::Instant,
    last: std::time::Instant,
    marks: Vec<(&'static str, std::time::Duration)>,
}

impl Stages {
    fn start() -> Self {
        let now = std::time::Instant::now();
        Stages {
            start: now,
            last: now,
            marks: Vec::with_capacity(12),
        }
    }

    fn mark(&mut self, stage: &'static str) {
        let now = std::time::Instant::now();
        self.marks.push((stage, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (stage, took) in &self.marks {
            write!(f, "{stage}={:.2}ms ", took.as_secs_f64() * 1e3)?;
        }
        write!(f, "total={:.2}ms", self.start.elapsed().as_secs_f64() * 1e3)
    }
}

fn unexpected(side: Side, body: &Body, name: &str) -> ClientError {
    ClientError::Protocol(format!(
        "{} sent {} (expected {name})",
        side.name(),
        wire::body_name(body)
    ))
}

/// One proof; returns it with the channels, which the next proof may reuse.
async fn run(
    request: &ProveRequest,
    prover: &Prover,
    kept: Option<Peers>,
) -> Result<(Proved, Peers), ClientError> {
    let (tee_k, tee_t) = (&prover.tee_k, &prover.tee_t);
    let (http_request, ranges) = request.build()?;
    let mut stages = Stages::start();
    // 1. A session: on the channels the last proof left open if they still work, else on new ones.
    let reused = match kept {
        Some(kept) => peers::next_session(kept).await.ok(),
        None => None,
    };
    let mut peers = match reused {
        Some(peers) => {
            stages.mark("new_session");
            peers
        }
        None => {
            let peers = peers::open(&prover.connector, &prover.identity, tee_k, tee_t).await?;
            stages.mark("channels_and_session_ready");
            peers
        }
    };
    let sid = peers.sid;

    // 2. request_connection → connection_ready.
    peers
        .send(
            Side::K,
            Body::RequestConnection(RequestConnection {
                hostname: request.host.clone(),
                port: u32::from(request.port),
                sni: String::new(),
                alpn: vec!["http/1.1".into()],
                force_tls_version: match request.force_version {
                    None => String::new(),
                    Some(TlsVersion::Tls12) => "1.2".into(),
                    Some(TlsVersion::Tls13) => "1.3".into(),
                },
                force_cipher_suite: request
                    .force_suite
                    .map(|s| s.iana_name().to_owned())
                    .unwrap_or_default(),
                nonce: request.nonce.clone(),
            }),
        )
        .await?;
    // 3. The TCP connection, opened while TEE_K answers (it needs nothing from TEE_K), and tcp_ready sent
    // as soon as it is up: TEE_K reads its messages in order, so tcp_ready waits in its inbox behind
    // request_connection, and its ClientHello follows connection_ready without another round trip.
    let connect = async {
        match request.connect_to {
            Some(addr) => TcpStream::connect(addr).await,
            None => TcpStream::connect((request.host.as_str(), request.port)).await,
        }
    };
    tokio::pin!(connect);
    let website_connect = |e: std::io::Error| ClientError::Website(format!("connect: {e}"));
    let mut connected: Option<std::io::Result<TcpStream>> = None;
    // A failed early tcp_ready (TEE_K refused and closed) waits: TEE_K's reason says more.
    let mut early_send = Ok(());
    // TEE_K's answer decides: a refusal returns at once, without waiting for the connection.
    let ready = loop {
        tokio::select! {
            ready = peers.expect(Side::K, "connection_ready") => break ready?,
            tcp = &mut connect, if connected.is_none() => {
                if let Ok(tcp) = &tcp {
                    let _ = tcp.set_nodelay(true);
                    early_send = peers.send(Side::K, Body::TcpReady(TcpReady {})).await;
                }
                connected = Some(tcp);
            }
        }
    };
    match ready {
        Body::ConnectionReady(_) => {}
        other => return Err(unexpected(Side::K, &other, "connection_ready")),
    }
    early_send?;
    stages.mark("connection_ready");
    let mut tcp = match connected {
        Some(tcp) => tcp.map_err(website_connect)?,
        None => {
            let tcp = connect.await.map_err(website_connect)?;
            let _ = tcp.set_nodelay(true);
            peers.send(Side::K, Body::TcpReady(TcpReady {})).await?;
            tcp
        }
    };
    stages.mark("tcp_connected");

    // 4-5. Relay: TEE_K's bytes to the server, each whole server record to TEE_K, until handshake_complete
    // (whose bytes — TLS 1.3: the client Finished — go out before the server can send anything more).
    let website = |e: std::io::Error| ClientError::Website(e.to_string());
    let mut splitter = RecordSplitter::any_version();
    let mut buf = vec![0u8; 64 * 1024];
    let complete = loop {
        tokio::select! {
            message = peers.expect(Side::K, "tcp_data") => match message? {
                Body::TcpData(data) => tcp.write_all(&data.data).await.map_err(website)?,
                Body::HandshakeComplete(done) => {
                    tcp.write_all(&done.data).await.map_err(website)?;
                    break done;
                }
                other => return Err(unexpected(Side::K, &other, "tcp_data")),
            },
            n = tcp.read(&mut buf) => {
                let n = n.map_err(website)?;
                if n == 0 {
                    // Usually TEE_K failed the handshake and its alert closed the connection: its reason
                    // is on the way, and says more than the closed socket.
                    let why = tokio::time::timeout(std::time::Duration::from_secs(1), peers.next()).await;
                    return Err(match why {
                        Ok(Err(e @ ClientError::Rejected(..))) => e,
                        _ => ClientError::Website("closed during the handshake".into()),
                    });
                }
                let records = splitter
                    .push(&buf[..n])
                    .map_err(|e| ClientError::Website(e.to_string()))?;
                for record in records {
                    peers
                        .send(Side::K, Body::TcpData(TcpData { data: record.to_bytes() }))
                        .await?;
                }
            }
        }
    };
    let suite = CipherSuite::from_iana_code(complete.cipher_suite)
        .ok_or_else(|| ClientError::Protocol("unknown cipher suite".into()))?;
    let version = suite.version();
    splitter.set_max_payload(version.max_ciphertext());
    stages.mark("tls_handshake");

    // 6. The redacted request to TEE_K, the streams to TEE_T. 7. TEE_T's record to the server.
    let (redacted, streams) =
        redact_request(&http_request, &ranges).map_err(|e| ClientError::Request(e.to_string()))?;
    peers.send(Side::K, Body::RedactedRequest(redacted)).await?;
    peers
        .send(
            Side::T,
            Body::RedactionStreams(RedactionStreams { ..streams }),
        )
        .await?;
    let data = match peers.expect(Side::T, "encrypted_data").await? {
        Body::EncryptedData(data) => data,
        other => return Err(unexpected(Side::T, &other, "encrypted_data")),
    };
    let mut payload = data.explicit_iv;
    payload.extend_from_slice(&data.ciphertext);
    payload.extend_from_slice(&data.tag);
    let record = Record::new(ContentType::ApplicationData, payload)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    tcp.write_all(&record.to_bytes()).await.map_err(website)?;
    stages.mark("request_sent");

    // 8-10. Records in batches to TEE_T while reading (at most two batches awaiting verification); the
    // keystreams of each batch come back from TEE_K once TEE_T verified it. Reading stops at TCP EOF or when
    // TEE_K reports a verified close_notify (some servers keep TCP open after it); the last batch says so.
    let mut seq = match version {
        TlsVersion::Tls13 => 0u64,
        TlsVersion::Tls12 => 1,
    };
    let mut kept: std::collections::VecDeque<(u64, bytes::Bytes)> = Default::default();
    // Keystreams waiting for their records: zeroized when taken or, on any failure, when dropped.
    let mut streams: HashMap<u64, SecretBytes> = HashMap::new();
    // The seq after each batch sent: a batch's keystreams settle every record before it.
    let mut batch_ends: std::collections::VecDeque<u64> = Default::default();
    // The response, and the two consolidated byte strings of the bundle: the application data's ciphertext
    // (T_OUTPUT signs its digest); built batch by batch as keystreams come, while the next batch is still on
    // its way. (The keystream's revealed bytes, which the bundle carries, are plaintext XOR ciphertext.)
    let mut assembled = Assembled::default();
    let mut batch = BatchedEncryptedResponses::default();
    let (mut batch_bytes, mut total, mut outstanding) = (0usize, 0usize, 0usize);
    let (mut reading, mut last_sent) = (true, false);
    loop {
        let ready = !batch.responses.is_empty()
            && outstanding < 2
            && (outstanding == 0 || batch_bytes >= BATCH_BYTES || !reading);
        if !last_sent && outstanding < 2 && (ready || !reading) {
            batch.eof = !reading;
            last_sent = batch.eof;
            peers
                .send(
                    Side::T,
                    Body::BatchedEncryptedResponses(std::mem::take(&mut batch)),
                )
                .await?;
            outstanding += 1;
            batch_bytes = 0;
            batch_ends.push_back(seq);
        }
        if last_sent && outstanding == 0 {
            break;
        }
        tokio::select! {
            n = tcp.read(&mut buf), if reading => {
                let n = n.map_err(website)?;
                if n == 0 {
                    if !splitter.is_empty() {
                        return Err(ClientError::Website("the connection ended inside a record".into()));
                    }
                    reading = false;
                    continue;
                }
                let records = splitter
                    .push(&buf[..n])
                    .map_err(|e| ClientError::Website(e.to_string()))?;
                for record in records {
                    let parts = ProtectedPayload::parse(suite, &record)
                        .map_err(|e| ClientError::Website(e.to_string()))?;
                    total += parts.ciphertext.len();
                    if total > MAX_RESPONSE {
                        return Err(ClientError::Website("response larger than the limit".into()));
                    }
                    batch_bytes += record.payload.len() + 32;
                    let tag = parts.tag.to_vec();
                    let explicit_iv = parts.explicit_nonce.map(|n| n.to_vec()).unwrap_or_default();
                    let at = explicit_iv.len();
                    let length = parts.ciphertext.len();
                    // The record's own buffer, shared by the batch and the kept copy: no copies.
                    let ciphertext = bytes::Bytes::from(record.payload).slice(at..at + length);
                    kept.push_back((seq, ciphertext.clone()));
                    batch.responses.push(EncryptedResponse {
                        ciphertext,
                        tag,
                        header: record.header.encode().to_vec(),
                        seq,
                        explicit_iv,
                    });
                    seq += 1;
                }
            }
            message = peers.expect(Side::K, "batched_decryption_streams") => match message? {
                Body::BatchedDecryptionStreams(done) => {
                    outstanding = outstanding.checked_sub(1).ok_or_else(|| {
                        ClientError::Protocol("keystreams for a batch never sent".into())
                    })?;
                    for s in done.streams {
                        streams.insert(s.seq, SecretBytes::new(s.keystream));
                    }
                    let end = batch_ends.pop_front().ok_or_else(|| {
                        ClientError::Protocol("keystreams for a batch never sent".into())
                    })?;
                    assembled.settle(&mut kept, &mut streams, end, total)?;
                    if done.closed {
                        reading = false;
                    }
                }
                other => return Err(unexpected(Side::K, &other, "batched_decryption_streams")),
            },
        }
    }
    stages.mark("records_and_keystreams");
    assembled.settle(&mut kept, &mut streams, u64::MAX, total)?;
    if !streams.is_empty() {
        return Err(ClientError::Protocol("a keystream for no record".into()));
    }
    let Assembled {
        response,
        ciphertext: response_ciphertext,
    } = assembled;
    stages.mark("reconstructed");

    // 11. What stays hidden.
    let hidden = hidden_ranges(&response, &request.reveal)?;
    stages.mark("hidden_ranges");
    peers
        .send(
            Side::K,
            Body::ResponseRedactionSpec(ResponseRedactionSpec {
                hidden: hidden.clone(),
            }),
        )
        .await?;
    // While the TEEs sign: what the verifier will show, and the revealed bytes the bundle carries.
    let revealed = view(&response, &hidden);
    let (revealed_ciphertext, revealed_keystream) =
        bundle::revealed(&response, &response_ciphertext, &hidden)?;
    drop(response_ciphertext);

    // 12. T_OUTPUT from TEE_T, K_OUTPUT from TEE_K.
    let (mut k_output, mut t_output): (Option<SignedMessage>, Option<SignedMessage>) = (None, None);
    while k_output.is_none() || t_output.is_none() {
        match peers.next().await? {
            (Side::K, Body::SignedMessage(m)) if m.body_type == BodyType::KOutput as i32 => {
                k_output = Some(m);
                peers.k_done = true;
            }
            (Side::T, Body::SignedMessage(m)) if m.body_type == BodyType::TOutput as i32 => {
                t_output = Some(m);
                peers.t_done = true;
            }
            (side, body) => return Err(unexpected(side, &body, "signed_message")),
        }
    }
    stages.mark("signed_outputs");
    tracing::debug!(response_bytes = total, stages = %stages, "proof timings");
    bundle::signed_digests_match(
        k_output.as_ref(),
        t_output.as_ref(),
        &hidden,
        &revealed_keystream,
        &revealed_ciphertext,
    )?;
    let proved = Proved {
        bundle: Bundle {
            k_output,
            t_output,
            attestations: Vec::new(),
            response_ciphertext: revealed_ciphertext,
            response_keystream: revealed_keystream,
        },
        response,
        revealed,
        hidden,
        session_id: sid,
        suite,
    };
    Ok((proved, peers))
}
