//! One TEE_K session, step by step as `docs/tee-protocol.md` numbers them (the order of
//! `tests/split_session.rs`), over the client's channel and the shared link to TEE_T.

use super::Inner;
use crate::proto::{
    Body, CertificateInfo as CertProto, ConnectionReady, EncryptedRequest, Finished,
    HandshakeComplete, KOutput, RequestConnection, ResponseEnd, SessionCreated, SessionReady,
    SignedMessage, TcpData,
};
use crate::record::{ContentType, MAX_PLAINTEXT};
use crate::redaction::{target_ranges, validate_redacted_request};
use crate::service::common::{Fail, MAX_NONCE, RouteGuard, now_ms, send};
use crate::service::peer::Link;
use crate::suite::{CipherSuite, TlsVersion};
use crate::tls_client::{ConnectRequest, RelayedTlsClient};
use crate::wire::{self, WireSessionId};
use std::sync::Arc;
use tessera_channel::{Channel, ChannelReader, ChannelWriter};
use tessera_session::{FailureReason, Session, SessionGuard};
use tokio::sync::mpsc;

use super::response::Response;

pub(crate) use crate::service::common::MAX_HIDDEN_RANGES as MAX_RANGES;

macro_rules! expect {
    ($body:expr, $variant:ident, $name:literal) => {
        match $body {
            Body::$variant(m) => m,
            other => return Err(Fail::unexpected(&other, $name)),
        }
    };
}

/// Serves a new client channel: its sessions one after another, each a registry session with a task of its
/// own. The first starts at once; after one that ended with both signed outputs the channel stays open, and
/// the client's `new_session` starts the next. A failed session closes the channel.
pub(super) fn start(inner: Arc<Inner>, channel: Channel) {
    let client_session = channel.session().clone();
    let _ = client_session.spawn(serve_channel(inner, channel));
}

async fn serve_channel(inner: Arc<Inner>, channel: Channel) {
    let client_session = channel.session().clone();
    let (mut rx, mut tx) = channel.split();
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) && !next_session_asked(&inner, &mut rx, &tx).await {
            tx.close();
            return;
        }
        let guard = match inner.sessions.create("tee-k") {
            Ok(guard) => guard,
            Err(e) => {
                tracing::warn!(error = %e, "refusing a client session");
                tx.close();
                return;
            }
        };
        let session = guard.session().clone();
        if session.activate().is_err() {
            return;
        }
        let (kept_tx, kept) = tokio::sync::oneshot::channel();
        let ended = client_session.clone();
        let inner = inner.clone();
        let spawned = session.spawn(async move {
            let _ = kept_tx.send(run(inner, guard, ended, rx, tx).await);
        });
        // The channel comes back after a session that ended well; otherwise it is closed (or was dropped
        // with a cancelled task).
        match (spawned, kept.await) {
            (Ok(_), Ok(Some(halves))) => (rx, tx) = halves,
            _ => return,
        }
    }
}

/// Waits for the client's `new_session` (within the idle limit). False: the channel ended, was idle too
/// long, or carried something else (answered with an error).
async fn next_session_asked(inner: &Inner, rx: &mut ChannelReader, tx: &ChannelWriter) -> bool {
    let message = match tokio::time::timeout(inner.limits.idle_timeout, rx.recv()).await {
        Ok(Ok(Some(bytes))) => wire::decode_received(bytes, None),
        _ => return false,
    };
    match message {
        Ok((_, Body::NewSession(_))) => true,
        Ok((sid, body)) => {
            let reason = format!(
                "{} between sessions (expected new_session)",
                wire::body_name(&body)
            );
            let _ = tx.send(wire::error_message(&sid, reason)).await;
            false
        }
        Err(e) => {
            let reason = format!("message refused: {e}");
            let _ = tx.send(wire::error_message(&[0; 16], reason)).await;
            false
        }
    }
}

enum From {
    Client(Body),
    TeeT(Body),
}

struct KSession {
    inner: Arc<Inner>,
    session: Session,
    sid: WireSessionId,
    client_rx: ChannelReader,
    client_tx: ChannelWriter,
    link: Option<Arc<Link>>,
    t_rx: Option<mpsc::Receiver<Body>>,
    _route: Option<RouteGuard<Body>>,
}

/// One session's steps on the client's channel. Returns the channel's halves when the session ended with
/// both signed outputs (the channel may carry the next one); otherwise the client got the reason and the
/// channel is closed.
async fn run(
    inner: Arc<Inner>,
    guard: SessionGuard,
    client_session: Session,
    client_rx: ChannelReader,
    client_tx: ChannelWriter,
) -> Option<(ChannelReader, ChannelWriter)> {
    let session = guard.session().clone();
    let deadline = tokio::time::Instant::now() + inner.limits.session_deadline;
    let mut s = KSession {
        inner,
        sid: session.id().to_bytes(),
        session,
        client_rx,
        client_tx,
        link: None,
        t_rx: None,
        _route: None,
    };
    let outcome = tokio::select! {
        outcome = s.steps() => outcome,
        _ = tokio::time::sleep_until(deadline) => Err(Fail::new("session deadline exceeded")),
        _ = client_session.ended() => Err(Fail::new("client gone")),
    };
    match outcome {
        Ok(()) => {
            guard.close();
            Some((s.client_rx, s.client_tx))
        }
        Err(Fail(reason)) => {
            tracing::info!(session = %s.session.id(), %reason, "TEE_K session failed");
            let error = wire::error_message(&s.sid, reason.clone());
            if let Some(link) = &s.link {
                let _ = link.writer.send(error.clone()).await;
            }
            let _ = s.client_tx.send(error).await;
            s.client_tx.close();
            guard.fail(FailureReason::error(reason));
            None
        }
    }
}

impl KSession {
    async fn next(&mut self) -> Result<From, Fail> {
        let client = async {
            match self.client_rx.recv().await {
                Ok(Some(bytes)) => wire::decode_received(bytes, Some(&self.sid))
                    .map(|(_, body)| From::Client(body))
                    .map_err(|e| Fail(format!("client message refused: {e}"))),
                Ok(None) | Err(_) => Err(Fail::new("client gone")),
            }
        };
        let tee_t = async {
            match self.t_rx.as_mut() {
                Some(rx) => match rx.recv().await {
                    Some(body) => Ok(From::TeeT(body)),
                    None => Err(Fail::new("link to TEE_T lost")),
                },
                None => std::future::pending().await,
            }
        };
        let idle = self.inner.limits.idle_timeout;
        let from = tokio::time::timeout(idle, async {
            tokio::select! {
                from = client => from,
                from = tee_t => from,
            }
        })
        .await
        .map_err(|_| Fail::new("idle for too long"))??;
        self.session.touch();
        Ok(from)
    }

    async fn recv_client(&mut self) -> Result<Body, Fail> {
        match self.next().await? {
            From::Client(body) => Ok(body),
            From::TeeT(body) => Err(Fail::unexpected(&body, "a client message")),
        }
    }

    async fn recv_t(&mut self) -> Result<Body, Fail> {
        match self.next().await? {
            From::TeeT(body) => Ok(body),
            From::Client(body) => Err(Fail::unexpected(&body, "a TEE_T message")),
        }
    }

    async fn to_client(&self, body: Body) -> Result<(), Fail> {
        send(&self.client_tx, &self.sid, body).await
    }

    async fn to_t(&self, body: Body) -> Result<(), Fail> {
        let link = self.link.as_ref().ok_or(Fail::new("no link to TEE_T"))?;
        send(&link.writer, &self.sid, body).await
    }

    async fn steps(&mut self) -> Result<(), Fail> {
        // 1. session_created K→T (echoed back once TEE_T registered it), then session_ready K→C: the client
        //    can only reach TEE_T for a session TEE_T already knows.
        let link = self
            .inner
            .link
            .get()
            .await
            .map_err(|e| Fail(format!("TEE_T unreachable: {e}")))?;
        let (route, t_rx) = link
            .routes
            .insert(self.sid, link.alive())
            .ok_or(Fail::new("session id in use"))?;
        self.link = Some(link);
        self.t_rx = Some(t_rx);
        self._route = Some(route);
        self.to_t(Body::SessionCreated(SessionCreated {})).await?;
        expect!(self.recv_t().await?, SessionCreated, "session_created");
        self.to_client(Body::SessionReady(SessionReady {})).await?;

        // 2. request_connection → connection_ready.
        let request = expect!(
            self.recv_client().await?,
            RequestConnection,
            "request_connection"
        );
        let (connect, port) = connect_request(&request)?;
        let mut tls = RelayedTlsClient::new(&connect, &self.inner.roots)?;
        self.to_client(Body::ConnectionReady(ConnectionReady {}))
            .await?;

        // 3. tcp_ready → the ClientHello. 4. relay until the handshake completes. 5. handshake_complete.
        expect!(self.recv_client().await?, TcpReady, "tcp_ready");
        let hello = tls.take_outgoing()?;
        self.to_client(Body::TcpData(TcpData { data: hello }))
            .await?;
        let mut records = 0usize;
        let established = loop {
            let data = expect!(self.recv_client().await?, TcpData, "tcp_data").data;
            records += 1;
            if records > self.inner.limits.max_handshake_records {
                return Err(Fail::new("too many handshake records"));
            }
            if let Err(e) = tls.feed(&data) {
                // rustls has usually queued an alert: the client sends it before closing.
                if let Ok(alert) = tls.take_outgoing()
                    && !alert.is_empty()
                {
                    let _ = self.to_client(Body::TcpData(TcpData { data: alert })).await;
                }
                return Err(Fail(format!("TLS handshake: {e}")));
            }
            let out = tls.take_outgoing()?;
            if tls.is_handshake_complete() {
                break (tls.finish()?, out);
            }
            if !out.is_empty() {
                self.to_client(Body::TcpData(TcpData { data: out })).await?;
            }
        };
        let (mut est, last_flight) = established;
        if !est.pending_records.is_empty() {
            return Err(Fail::new(
                "the server sent records before the request (not supported)",
            ));
        }
        let suite = est.suite;
        let version = version_code(suite);
        self.to_client(Body::HandshakeComplete(HandshakeComplete {
            cipher_suite: u32::from(suite.iana_code()),
            tls_version: version,
            data: last_flight,
        }))
        .await?;

        // 6. redacted_request: validated, encrypted; 7. encrypted_request K→T (TEE_T fixes, tags, sends it).
        let redacted = expect!(
            self.recv_client().await?,
            RedactedRequest,
            "redacted_request"
        );
        validate_redacted_request(&redacted, &connect.hostname, port)?;
        if redacted.redacted.len() > MAX_PLAINTEXT - 1 {
            return Err(Fail::new("the request must fit in one TLS record (16 KiB)"));
        }
        let outgoing = est
            .writer
            .encrypt(ContentType::ApplicationData, &redacted.redacted, 0)?;
        let masked_ranges = redacted
            .ranges
            .iter()
            .map(|r| redacted.redacted[r.start as usize..(r.start + r.length) as usize].to_vec())
            .collect();
        self.to_t(Body::EncryptedRequest(EncryptedRequest {
            ciphertext: outgoing.ciphertext.clone(),
            tag_secrets: outgoing.tag_secrets.expose_secret().to_vec(),
            commitments: redacted.commitments.clone(),
            cipher_suite: u32::from(suite.iana_code()),
            seq: outgoing.seq,
            ranges: redacted.ranges.clone(),
            aad: outgoing.aad.clone(),
            masked_ranges,
            explicit_iv: outgoing
                .explicit_nonce
                .map(|n| n.to_vec())
                .unwrap_or_default(),
            in_target: target_ranges(&redacted),
        }))
        .await?;

        // 8-10. batches: lengths T→K, tag secrets K→T, verifications T→K, keystreams K→C; until the client's
        // 11. response_redaction_spec.
        let mut response = Response::new(suite);
        let spec = loop {
            match self.next().await? {
                From::TeeT(Body::BatchedResponseLengths(lengths)) => {
                    let secrets = response.secrets(&mut est, lengths, &self.inner.limits)?;
                    self.to_t(Body::BatchedTagSecrets(secrets)).await?;
                    let verified = expect!(
                        self.recv_t().await?,
                        BatchedTagVerifications,
                        "batched_tag_verifications"
                    );
                    let streams = response.verified(verified)?;
                    self.to_client(Body::BatchedDecryptionStreams(streams))
                        .await?;
                }
                From::Client(Body::ResponseRedactionSpec(spec)) => break spec,
                From::TeeT(other) => {
                    return Err(Fail::unexpected(&other, "batched_response_lengths"));
                }
                From::Client(other) => {
                    return Err(Fail::unexpected(&other, "response_redaction_spec"));
                }
            }
        };
        // Completion, in one place: every record verified, the end proven, the client's spec received.
        let spans = response.finish(&spec.hidden)?;
        let hidden = spec.hidden;

        // 12. finished K→T, t_output_digest T→K, K_OUTPUT signed and sent.
        self.to_t(Body::Finished(Finished {
            nonce: request.nonce.clone(),
            response_ranges: hidden.clone(),
        }))
        .await?;
        // Made and hashed while TEE_T signs its own output: only what the proof reveals.
        let revealed_keystream = response.revealed_keystream(&est.reader, &spans)?;
        let keystream_sha256 = crate::signing::sha256(&revealed_keystream).to_vec();
        drop(revealed_keystream);
        let digest = expect!(self.recv_t().await?, TOutputDigest, "t_output_digest").digest;
        let digest: [u8; 32] = digest
            .as_slice()
            .try_into()
            .map_err(|_| Fail::new("t_output_digest is not 32 bytes"))?;
        let mut output = KOutput {
            session_id: self.sid.to_vec(),
            timestamp_ms: now_ms(),
            nonce: request.nonce,
            hostname: connect.hostname.clone(),
            port: u32::from(port),
            cipher_suite: u32::from(suite.iana_code()),
            tls_version: version,
            redacted_request: redacted.redacted,
            request_ranges: redacted.ranges,
            response_keystream_sha256: keystream_sha256,
            response_ranges: hidden,
            certificate: est.certificates.first().map(|c| CertProto {
                subject_cn: c.subject_cn.clone().unwrap_or_default(),
                issuer_cn: c.issuer_cn.clone().unwrap_or_default(),
                not_before: c.not_before,
                not_after: c.not_after,
                dns_names: c.dns_names.clone(),
            }),
            records: response.records,
            response_end: ResponseEnd::CloseNotify as i32,
            t_output_digest: Vec::new(),
        };
        let signed: SignedMessage = self.inner.signer.sign_k_output(&mut output, digest)?;
        self.to_client(Body::SignedMessage(signed)).await?;
        self.inner
            .metrics
            .signed(self.session.age(), response.total);
        tracing::debug!(session = %self.session.id(), "K_OUTPUT signed");
        Ok(())
    }
}

fn version_code(suite: CipherSuite) -> u32 {
    match suite.version() {
        TlsVersion::Tls13 => 0x0304,
        TlsVersion::Tls12 => 0x0303,
    }
}

/// The checked `request_connection`: what rustls is configured with, and the port.
fn connect_request(r: &RequestConnection) -> Result<(ConnectRequest, u16), Fail> {
    if r.hostname.is_empty() || r.hostname.len() > 253 {
        return Err(Fail::new("bad hostname"));
    }
    let port = u16::try_from(r.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(Fail::new("bad port"))?;
    if r.nonce.len() > MAX_NONCE {
        return Err(Fail(format!("nonce longer than {MAX_NONCE} bytes")));
    }
    if !r.sni.is_empty() && r.sni != r.hostname {
        return Err(Fail::new("SNI must equal the hostname"));
    }
    if r.alpn.len() > 8 || r.alpn.iter().any(|p| p.is_empty() || p.len() > 32) {
        return Err(Fail::new("bad ALPN list"));
    }
    let mut connect = ConnectRequest::new(r.hostname.clone());
    if !r.alpn.is_empty() {
        connect.alpn = r.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    }
    match r.force_tls_version.as_str() {
        "" => {}
        "1.2" => connect = connect.with_version(TlsVersion::Tls12),
        "1.3" => connect = connect.with_version(TlsVersion::Tls13),
        _ => {
            return Err(Fail::new(
                "force_tls_version must be \"\", \"1.2\" or \"1.3\"",
            ));
        }
    }
    if !r.force_cipher_suite.is_empty() {
        let suite = CipherSuite::from_iana_name(&r.force_cipher_suite)
            .ok_or(Fail::new("unknown cipher suite"))?;
        connect = connect.with_suite(suite);
    }
    Ok((connect, port))
}
