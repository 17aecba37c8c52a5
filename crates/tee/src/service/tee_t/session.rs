//! One TEE_T session: the request fixed up and tagged (7.), every response tag verified and every record's
//! type established (9.), T_OUTPUT signed on TEE_K's `finished` (12.). Messages from TEE_K and from the
//! client arrive in one inbox and are handled in order by one task; a message out of place ends the session.

use super::{Event, Inner};
use crate::nonce::{record_overhead, tls12_aad};
use crate::proto::{
    BatchedEncryptedResponses, BatchedResponseLengths, BatchedTagSecrets, BatchedTagVerifications,
    Body, EncryptedData, EncryptedRequest, EncryptedResponse, Finished, ProofStream, RangeType,
    RecordInfo, RedactionStreams, RequestRange, ResponseLength, SessionCreated, TOutput,
    TOutputDigest, TagVerification,
};
use crate::record::{ContentType, HEADER_LEN, RecordHeader, TAG_LEN};
use crate::redaction::check_streams_in;
use crate::service::common::{Fail, RouteGuard, now_ms, scrub, send};
use crate::split::{TagSecrets, compute_tag, verify_tag};
use crate::suite::{CipherSuite, TlsVersion};
use crate::wire::{self, WireSessionId};
use std::collections::VecDeque;
use std::sync::Arc;
use tessera_channel::ChannelWriter;
use tessera_session::{CancellationToken, FailureReason, SessionGuard};
use tokio::sync::mpsc;
use zeroize::Zeroize;

/// Batches a client may queue ahead of verification.
const MAX_QUEUED_BATCHES: usize = 8;

/// Registers the session TEE_K announced, spawns its task, and echoes `session_created`.
/// `link` is cancelled when the TEE_K link that announced the session is lost: the session then ends.
pub(super) async fn start(
    inner: Arc<Inner>,
    sid: WireSessionId,
    k_tx: ChannelWriter,
    link: &CancellationToken,
) {
    let refuse = |reason: &str| wire::error_message(&sid, reason);
    let Some((route, inbox)) = inner.routes.insert(sid, link) else {
        let _ = k_tx.send(refuse("session id in use")).await;
        return;
    };
    let guard = match inner.sessions.create("tee-t") {
        Ok(guard) => guard,
        Err(e) => {
            let _ = k_tx
                .send(refuse(&format!("TEE_T refused the session: {e}")))
                .await;
            return;
        }
    };
    let session = guard.session().clone();
    if session.activate().is_err() {
        return;
    }
    let state = TSession {
        inner,
        sid,
        k_tx,
        client: None,
        suite: None,
        request: None,
        streams: None,
        ranges: Vec::new(),
        proof_streams: Vec::new(),
        next_seq: 0,
        queued: VecDeque::new(),
        in_flight: None,
        eof: false,
        closed: false,
        records: Vec::new(),
        app_data: Vec::new(),
        total: 0,
        charged: 0,
    };
    // The task echoes session_created first: TEE_K waits for it before telling the client session_ready.
    let _ = session.spawn(run(state, guard, inbox, route, link.clone()));
}

struct TSession {
    inner: Arc<Inner>,
    sid: WireSessionId,
    k_tx: ChannelWriter,
    client: Option<ChannelWriter>,
    suite: Option<CipherSuite>,
    request: Option<EncryptedRequest>,
    streams: Option<RedactionStreams>,
    ranges: Vec<RequestRange>,
    proof_streams: Vec<ProofStream>,
    next_seq: u64,
    queued: VecDeque<Vec<EncryptedResponse>>,
    in_flight: Option<Vec<EncryptedResponse>>,
    eof: bool,
    closed: bool,
    records: Vec<RecordInfo>,
    /// The verified application data's ciphertext, record by record (slices of the received batches, no
    /// copies): at `finished`, T_OUTPUT signs the SHA-256 of its revealed bytes, the hidden ranges cut out.
    /// Bounded by `Limits::max_response`, which charges every record its framing too.
    app_data: Vec<bytes::Bytes>,
    total: usize,
    /// Ciphertext plus [`crate::service::common::RECORD_CHARGE`] per record, against `max_response`.
    charged: usize,
}

async fn run(
    mut s: TSession,
    guard: SessionGuard,
    mut inbox: mpsc::Receiver<Event>,
    route: RouteGuard<Event>,
    link: CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + s.inner.limits.session_deadline;
    let outcome = match send(&s.k_tx, &s.sid, Body::SessionCreated(SessionCreated {})).await {
        Err(e) => Err(e),
        Ok(()) => tokio::select! {
            outcome = s.events(&guard, &mut inbox) => outcome,
            _ = tokio::time::sleep_until(deadline) => Err(Fail::new("session deadline exceeded")),
            // The route is cancelled when TEE_K's link is lost, or when a full inbox got it dropped (the
            // router does not wait for a stuck session).
            () = route.cancelled() => Err(Fail::new(if link.is_cancelled() {
                "link to TEE_K lost"
            } else {
                "session stuck: its inbox overflowed"
            })),
        },
    };
    if let Some(streams) = s.streams.as_mut() {
        streams.streams.iter_mut().for_each(Zeroize::zeroize);
        streams
            .commitment_keys
            .iter_mut()
            .for_each(Zeroize::zeroize);
    }
    if let Some(request) = s.request.as_mut() {
        request.tag_secrets.zeroize();
    }
    match outcome {
        Ok(()) => {
            // The client's channel stays open: it may carry the client's next session.
            s.inner.metrics.signed(guard.session().age(), s.total);
            guard.close();
        }
        Err(Fail(reason)) => {
            tracing::info!(session = %guard.session().id(), %reason, "TEE_T session failed");
            let error = wire::error_message(&s.sid, reason.clone());
            let _ = s.k_tx.send(error.clone()).await;
            // A client that attached as the session ended has its writer still queued: no event is taken
            // from now on, and every queued attachment is told why too.
            inbox.close();
            let mut clients: Vec<ChannelWriter> = s.client.take().into_iter().collect();
            while let Ok(event) = inbox.try_recv() {
                if let Event::Attach(writer) = event {
                    clients.push(writer);
                }
            }
            for client in clients {
                let _ = client.send(error.clone()).await;
                client.close();
            }
            guard.fail(FailureReason::error(reason));
        }
    }
}

impl TSession {
    async fn events(
        &mut self,
        guard: &SessionGuard,
        inbox: &mut mpsc::Receiver<Event>,
    ) -> Result<(), Fail> {
        loop {
            let event = tokio::time::timeout(self.inner.limits.idle_timeout, inbox.recv())
                .await
                .map_err(|_| Fail::new("idle for too long"))?
                .ok_or(Fail::new("link to TEE_K lost"))?;
            guard.session().touch();
            match event {
                Event::Attach(writer) => {
                    if self.client.is_some() {
                        let _ = writer
                            .send(wire::error_message(
                                &self.sid,
                                "session already has a client",
                            ))
                            .await;
                        writer.close();
                    } else {
                        self.client = Some(writer);
                    }
                }
                Event::ClientGone => return Err(Fail::new("client gone")),
                Event::ClientRefused(reason) => return Err(Fail(reason)),
                Event::FromClient(Body::RedactionStreams(streams)) => {
                    if self.streams.is_some() {
                        return Err(Fail::new("duplicate redaction_streams"));
                    }
                    self.streams = Some(streams);
                    self.request().await?;
                }
                Event::FromClient(Body::BatchedEncryptedResponses(batch)) => {
                    self.batch(batch).await?;
                }
                Event::FromClient(other) => {
                    return Err(Fail::unexpected(&other, "a client message"));
                }
                Event::FromK(Body::EncryptedRequest(request)) => {
                    if self.request.is_some() {
                        return Err(Fail::new("duplicate encrypted_request"));
                    }
                    self.request = Some(request);
                    self.request().await?;
                }
                Event::FromK(Body::BatchedTagSecrets(secrets)) => {
                    let outcome = self.verify(&secrets).await;
                    scrub(&mut Body::BatchedTagSecrets(secrets));
                    outcome?;
                }
                Event::FromK(Body::Finished(finished)) => return self.finish(finished).await,
                Event::FromK(other) => return Err(Fail::unexpected(&other, "a TEE_K message")),
            }
        }
    }

    async fn to_client(&self, body: Body) -> Result<(), Fail> {
        let client = self.client.as_ref().ok_or(Fail::new("no client"))?;
        send(client, &self.sid, body).await
    }

    async fn to_k(&self, body: Body) -> Result<(), Fail> {
        send(&self.k_tx, &self.sid, body).await
    }

    fn version(&self) -> Result<(CipherSuite, TlsVersion), Fail> {
        let suite = self.suite.ok_or(Fail::new("no request yet"))?;
        Ok((suite, suite.version()))
    }

    /// Step 7: With both the encrypted request (TEE_K) and the streams (client): check the commitments and that
    /// no hidden byte is a control byte, XOR the streams in, tag, and hand the record to the client.
    async fn request(&mut self) -> Result<(), Fail> {
        let (Some(request), Some(streams)) = (self.request.as_mut(), self.streams.as_ref()) else {
            return Ok(());
        };
        let suite = CipherSuite::from_iana_code(request.cipher_suite)
            .ok_or(Fail::new("unknown cipher suite"))?;
        if request.in_target.len() != request.ranges.len() {
            return Err(Fail::new(
                "encrypted_request without one target flag per range",
            ));
        }
        check_streams_in(
            &request.ranges,
            &request.commitments,
            streams,
            &request.masked_ranges,
            &request.in_target,
        )?;
        let mut ciphertext = request.ciphertext.clone();
        for (range, stream) in request.ranges.iter().zip(&streams.streams) {
            let start = range.start as usize;
            let target = ciphertext
                .get_mut(start..start + stream.len())
                .ok_or(Fail::new("hidden range outside the request"))?;
            target.iter_mut().zip(stream).for_each(|(c, s)| *c ^= s);
        }
        let secrets = TagSecrets::from_bytes(suite.aead(), &request.tag_secrets)?;
        request.tag_secrets.zeroize();
        let tag = compute_tag(&secrets, &request.aad, &ciphertext);
        self.proof_streams = request
            .ranges
            .iter()
            .zip(&streams.streams)
            .filter(|(r, _)| r.r#type == RangeType::SensitiveProof as i32)
            .map(|(r, stream)| ProofStream {
                start: r.start,
                stream: stream.clone(),
            })
            .collect();
        self.ranges = request.ranges.clone();
        let explicit_iv = request.explicit_iv.clone();
        self.suite = Some(suite);
        self.next_seq = match suite.version() {
            TlsVersion::Tls13 => 0,
            TlsVersion::Tls12 => 1,
        };
        self.to_client(Body::EncryptedData(EncryptedData {
            ciphertext,
            tag: tag.to_vec(),
            explicit_iv,
        }))
        .await
    }

    /// Step 8: A batch of server records from the client: checked, queued, and its lengths sent to TEE_K when no
    /// other batch is being verified.
    async fn batch(&mut self, batch: BatchedEncryptedResponses) -> Result<(), Fail> {
        let (suite, version) = self.version()?;
        if self.eof {
            return Err(Fail::new("records after the last batch"));
        }
        if self.queued.len() >= MAX_QUEUED_BATCHES {
            return Err(Fail::new("too many batches ahead of verification"));
        }
        let gcm = suite.aead().is_gcm();
        let overhead = record_overhead(version, gcm);
        for record in &batch.responses {
            if record.seq != self.next_seq {
                return Err(Fail::new("response records are not contiguous"));
            }
            self.next_seq += 1;
            let header = parse_header(&record.header)?;
            if version == TlsVersion::Tls13
                && (header.content_type != ContentType::ApplicationData
                    || record.ciphertext.is_empty())
            {
                return Err(Fail::new(
                    "plaintext or empty record after the TLS 1.3 handshake",
                ));
            }
            if usize::from(header.length) != record.ciphertext.len() + overhead
                || record.tag.len() != TAG_LEN
                || record.explicit_iv.len()
                    != if version == TlsVersion::Tls12 && gcm {
                        8
                    } else {
                        0
                    }
            {
                return Err(Fail::new("record parts disagree with its header"));
            }
            self.total = self.total.saturating_add(record.ciphertext.len());
            self.charged = self
                .charged
                .saturating_add(record.ciphertext.len() + crate::service::common::RECORD_CHARGE);
            if self.charged > self.inner.limits.max_response {
                return Err(Fail::new("response larger than the limit"));
            }
        }
        self.eof = batch.eof;
        self.queued.push_back(batch.responses);
        self.send_next_lengths().await
    }

    async fn send_next_lengths(&mut self) -> Result<(), Fail> {
        if self.in_flight.is_some() {
            return Ok(());
        }
        let Some(batch) = self.queued.pop_front() else {
            return Ok(());
        };
        let lengths = batch
            .iter()
            .map(|r| ResponseLength {
                seq: r.seq,
                length: r.ciphertext.len() as u32,
                header: r.header.clone(),
                explicit_iv: r.explicit_iv.clone(),
            })
            .collect();
        self.in_flight = Some(batch);
        self.to_k(Body::BatchedResponseLengths(BatchedResponseLengths {
            lengths,
        }))
        .await
    }

    /// Step 9: Every tag verified from TEE_K's tag secrets over the ciphertext TEE_T holds; every record's type
    /// established (TLS 1.3: from the tail keystream; an alert must be close_notify).
    async fn verify(&mut self, secrets: &BatchedTagSecrets) -> Result<(), Fail> {
        let (suite, version) = self.version()?;
        let batch = self
            .in_flight
            .take()
            .ok_or(Fail::new("tag secrets without records"))?;
        if batch.len() != secrets.secrets.len() {
            return Err(Fail::new("tag secrets for a different number of records"));
        }
        let tls13 = version == TlsVersion::Tls13;
        let mut out = BatchedTagVerifications::default();
        for (record, secret) in batch.iter().zip(&secrets.secrets) {
            if record.seq != secret.seq {
                return Err(Fail::new("tag secrets for another record"));
            }
            if self.closed {
                return Err(Fail::new("a record after close_notify"));
            }
            let header = parse_header(&record.header)?;
            let ct = &record.ciphertext;
            let tag_secrets = TagSecrets::from_bytes(suite.aead(), &secret.tag_secrets)?;
            let aad = if tls13 {
                header.encode().to_vec()
            } else {
                let len = u16::try_from(ct.len()).map_err(|_| Fail::new("record length"))?;
                tls12_aad(record.seq, header.content_type, header.version, len).to_vec()
            };
            if verify_tag(&tag_secrets, &aad, ct, &record.tag).is_err() {
                return Err(Fail(format!(
                    "tag of response record {} does not verify",
                    record.seq
                )));
            }
            let tail = &secret.tail_keystream;
            let content_type = if tls13 {
                let n = if ct.len() <= 3 { ct.len() } else { 1 };
                if tail.len() != n {
                    return Err(Fail::new("tail keystream of the wrong length"));
                }
                let plain: Vec<u8> = ct[ct.len() - n..]
                    .iter()
                    .zip(tail)
                    .map(|(c, k)| c ^ k)
                    .collect();
                let byte = plain[n - 1];
                if byte == 0 {
                    return Err(Fail::new("padded TLS 1.3 records are not supported"));
                }
                let content_type = ContentType::try_from(byte)
                    .map_err(|_| Fail::new("unknown inner content type"))?;
                if content_type == ContentType::Alert {
                    check_close_notify(&plain[..n - 1])?;
                }
                content_type
            } else {
                if header.content_type == ContentType::Alert {
                    if tail.len() != ct.len() {
                        return Err(Fail::new("alert keystream of the wrong length"));
                    }
                    let plain: Vec<u8> = ct.iter().zip(tail).map(|(c, k)| c ^ k).collect();
                    check_close_notify(&plain)?;
                } else if !tail.is_empty() {
                    return Err(Fail::new("unexpected tail keystream"));
                }
                header.content_type
            };
            let length = ct.len() - usize::from(tls13);
            match content_type {
                ContentType::ApplicationData if length > 0 => {
                    self.app_data.push(ct.slice(..length));
                }
                ContentType::ApplicationData => {}
                ContentType::Alert => self.closed = true,
                ContentType::Handshake if tls13 => {}
                _ => return Err(Fail::new("unexpected record type after the handshake")),
            }
            self.records.push(RecordInfo {
                seq: record.seq,
                content_type: u32::from(content_type.to_u8()),
                length: length as u32,
            });
            out.verifications.push(TagVerification {
                seq: record.seq,
                verified: true,
                content_type: u32::from(content_type.to_u8()),
            });
        }
        self.to_k(Body::BatchedTagVerifications(out)).await?;
        self.send_next_lengths().await
    }

    /// Step 12: `finished` (from TEE_K's link only): completion checked here, in one place — the request was
    /// sent, the last batch came, every record is verified, the end is a close_notify — then T_OUTPUT is
    /// signed, its digest goes to TEE_K and the signed output to the client.
    async fn finish(&mut self, finished: Finished) -> Result<(), Fail> {
        if self.suite.is_none() {
            return Err(Fail::new("finished before the request"));
        }
        if !self.eof || self.in_flight.is_some() || !self.queued.is_empty() {
            return Err(Fail::new("finished before every record was verified"));
        }
        if !self.closed {
            return Err(Fail::new("finished without a verified close_notify"));
        }
        if finished.nonce.len() > crate::service::common::MAX_NONCE {
            return Err(Fail::new("nonce too long"));
        }
        if finished.response_ranges.len() > crate::service::common::MAX_HIDDEN_RANGES {
            return Err(Fail::new("too many hidden ranges"));
        }
        // Only what the proof reveals is hashed: the hidden ranges (TEE_K checked them against the
        // response and signs them) cut out of the records' ciphertext.
        let app_data = std::mem::take(&mut self.app_data);
        let revealed_sha256 = crate::verify::revealed_sha256(
            app_data.iter().map(|b| &b[..]),
            &finished.response_ranges,
        )
        .map_err(|e| Fail::new(format!("hidden ranges: {e}")))?;
        drop(app_data);
        let mut output = TOutput {
            session_id: self.sid.to_vec(),
            timestamp_ms: now_ms(),
            nonce: finished.nonce,
            response_ciphertext_sha256: revealed_sha256.to_vec(),
            request_proof_streams: std::mem::take(&mut self.proof_streams),
            records: std::mem::take(&mut self.records),
            transcript_hash: Vec::new(),
        };
        let (signed, digest) = self.inner.signer.sign_t_output(&mut output, &self.ranges)?;
        self.to_k(Body::TOutputDigest(TOutputDigest {
            digest: digest.to_vec(),
        }))
        .await?;
        self.to_client(Body::SignedMessage(signed)).await
    }
}

fn parse_header(bytes: &[u8]) -> Result<RecordHeader, Fail> {
    let header: &[u8; HEADER_LEN] = bytes
        .try_into()
        .map_err(|_| Fail::new("record header is not 5 bytes"))?;
    Ok(RecordHeader::parse(header)?)
}

fn check_close_notify(alert: &[u8]) -> Result<(), Fail> {
    match alert {
        [_, 0] => Ok(()),
        [_, description] => Err(Fail(format!("the server sent alert {description}"))),
        _ => Err(Fail::new("malformed alert")),
    }
}
