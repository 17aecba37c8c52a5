//! Faults at each protocol step, injected by a hand-driven client speaking the wire protocol over real
//! channels: out-of-order, unknown, foreign-session, duplicate and oversized messages, `finished` from a
//! client, a tampered or missing record, a client gone midway, an unknown session, the session deadline and
//! TEE_T gone. Each ends that session only, with the reason to the client, while another client keeps
//! proving successfully; the registries are empty afterwards, and a good proof still succeeds.

mod common;
mod service_common;

use common::{HOSTNAME, TestPki};
use service_common::{Site, Tees, request, start_tees, start_tees_with, wait_empty};
use std::time::Duration;
use tessera_channel::{ChannelConfig, ChannelReader, ChannelWriter, Connector, Identity};
use tessera_session::{Registry, RegistryConfig};
use tessera_tee::proto::{
    BatchedEncryptedResponses, Body, EncryptedResponse, Envelope, Finished, RangeType,
    RedactedRequest, RedactionStreams, RequestConnection, RequestRange, ResponseRedactionSpec,
    TcpData, TcpReady,
};
use tessera_tee::record::{ContentType, Record, RecordSplitter};
use tessera_tee::redaction::redact_request;
use tessera_tee::service::{ClientError, Limits, Prover, prove};
use tessera_tee::wire::{self, WireSessionId};
use tessera_tee::{CipherSuite, ProtectedPayload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// A client driven by hand, one protocol step at a time.
struct Raw {
    sid: WireSessionId,
    k_rx: ChannelReader,
    k_tx: ChannelWriter,
    t: Option<(ChannelReader, ChannelWriter)>,
    connector: Connector,
    tcp: Option<TcpStream>,
    suite: Option<CipherSuite>,
    splitter: RecordSplitter,
}

async fn recv(rx: &mut ChannelReader, sid: &WireSessionId) -> Option<Body> {
    match tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an answer in time")
    {
        Ok(Some(bytes)) => Some(wire::decode(bytes, Some(sid)).expect("a valid message").1),
        _ => None,
    }
}

fn reason(body: Option<Body>) -> String {
    match body {
        Some(Body::Error(e)) => e.reason,
        other => panic!(
            "expected an error, got {:?}",
            other.map(|b| wire::body_name(&b))
        ),
    }
}

impl Raw {
    async fn open(tees: &Tees, config: ChannelConfig) -> Raw {
        let connector = Connector::new(Registry::new(RegistryConfig::new("raw-client")), config);
        let identity = Identity::generate();
        let k = connector
            .connect(&tees.k_end.url, tees.k_end.key, &identity)
            .await
            .expect("connect TEE_K");
        let (mut k_rx, k_tx) = k.split();
        let bytes = k_rx.recv().await.expect("recv").expect("session_ready");
        let (sid, body) = wire::decode(bytes, None).expect("decode");
        assert!(matches!(body, Body::SessionReady(_)));
        Raw {
            sid,
            k_rx,
            k_tx,
            t: None,
            connector,
            tcp: None,
            suite: None,
            splitter: RecordSplitter::any_version(),
        }
    }

    async fn send_k(&self, body: Body) {
        let _ = self.k_tx.send(wire::encode(&self.sid, body)).await;
    }

    async fn recv_k(&mut self) -> Option<Body> {
        recv(&mut self.k_rx, &self.sid).await
    }

    async fn connect_t(&mut self, tees: &Tees) {
        let t = self
            .connector
            .connect(&tees.t_end.url, tees.t_end.key, &Identity::generate())
            .await
            .expect("connect TEE_T");
        self.t = Some(t.split());
    }

    async fn send_t(&self, body: Body) {
        let (_, tx) = self.t.as_ref().expect("TEE_T channel");
        let _ = tx.send(wire::encode(&self.sid, body)).await;
    }

    async fn recv_t(&mut self) -> Option<Body> {
        let (rx, _) = self.t.as_mut().expect("TEE_T channel");
        recv(rx, &self.sid).await
    }

    /// Steps 2-5.
    async fn handshake(&mut self, site: &Site) {
        self.send_k(Body::RequestConnection(RequestConnection {
            hostname: HOSTNAME.into(),
            port: u32::from(site.addr.port()),
            ..Default::default()
        }))
        .await;
        assert!(matches!(
            self.recv_k().await,
            Some(Body::ConnectionReady(_))
        ));
        let mut tcp = TcpStream::connect(site.addr).await.expect("tcp");
        self.send_k(Body::TcpReady(TcpReady {})).await;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            tokio::select! {
                body = recv(&mut self.k_rx, &self.sid) => match body {
                    Some(Body::TcpData(d)) => tcp.write_all(&d.data).await.expect("write"),
                    Some(Body::HandshakeComplete(done)) => {
                        tcp.write_all(&done.data).await.expect("write");
                        self.suite = CipherSuite::from_iana_code(done.cipher_suite);
                        break;
                    }
                    other => panic!("handshake: {:?}", other.map(|b| wire::body_name(&b))),
                },
                n = tcp.read(&mut buf) => {
                    let n = n.expect("read");
                    assert!(n > 0, "site closed during the handshake");
                    for record in self.splitter.push(&buf[..n]).expect("records") {
                        self.send_k(Body::TcpData(TcpData { data: record.to_bytes() })).await;
                    }
                }
            }
        }
        self.tcp = Some(tcp);
    }

    /// Steps 6-7: the redacted request (cookie hidden) and the streams; the tagged record to the site.
    async fn request(&mut self, tees: &Tees, site: &Site) -> RedactionStreams {
        let http = format!(
            "GET /balance HTTP/1.1\r\nHost: {HOSTNAME}:{}\r\nCookie: session=s3cr3t-0001\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n",
            site.addr.port()
        );
        let start = http.find("session=").expect("cookie") as u32;
        let ranges = [RequestRange {
            start,
            length: 19,
            r#type: RangeType::Sensitive as i32,
        }];
        let (redacted, streams) = redact_request(http.as_bytes(), &ranges).expect("redact");
        self.send_k(Body::RedactedRequest(redacted)).await;
        self.connect_t(tees).await;
        self.send_t(Body::RedactionStreams(streams.clone())).await;
        let data = match self.recv_t().await {
            Some(Body::EncryptedData(data)) => data,
            other => panic!(
                "expected encrypted_data, got {:?}",
                other.map(|b| wire::body_name(&b))
            ),
        };
        let mut payload = data.explicit_iv;
        payload.extend_from_slice(&data.ciphertext);
        payload.extend_from_slice(&data.tag);
        let record = Record::new(ContentType::ApplicationData, payload).expect("record");
        let tcp = self.tcp.as_mut().expect("tcp");
        tcp.write_all(&record.to_bytes()).await.expect("write");
        streams
    }

    /// Step 8's records, read to EOF.
    async fn records(&mut self) -> Vec<EncryptedResponse> {
        let suite = self.suite.expect("suite");
        let tcp = self.tcp.as_mut().expect("tcp");
        let mut bytes = Vec::new();
        tcp.read_to_end(&mut bytes).await.expect("read");
        let mut seq = 0;
        self.splitter
            .push(&bytes)
            .expect("records")
            .iter()
            .map(|record| {
                let parts = ProtectedPayload::parse(suite, record).expect("parts");
                seq += 1;
                EncryptedResponse {
                    ciphertext: parts.ciphertext.to_vec().into(),
                    tag: parts.tag.to_vec(),
                    header: record.header.encode().to_vec(),
                    seq: seq - 1,
                    explicit_iv: Vec::new(),
                }
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_ends_its_session_only_with_a_reason() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let site = Site::start(&pki.ecdsa);
    let tls13 =
        || request(&site, "/balance", "0001").force_suite(CipherSuite::Tls13Aes128GcmSha256);
    let config = ChannelConfig::default;
    // Meanwhile another client proves again and again: the faults must not touch its sessions.
    let stop = tessera_session::CancellationToken::new();
    let bystander = {
        let (request, k, t, stop) = (
            request(&site, "/balance", "0777"),
            tees.k_end.clone(),
            tees.t_end.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut proofs = 0;
            while !stop.is_cancelled() || proofs == 0 {
                let proved = prove(&request, &k, &t).await;
                assert!(proved.is_ok(), "a bystander proof failed: {proved:?}");
                proofs += 1;
            }
            proofs
        })
    };

    // Out of order: a redacted request before request_connection.
    let mut raw = Raw::open(&tees, config()).await;
    raw.send_k(Body::RedactedRequest(RedactedRequest::default()))
        .await;
    assert!(reason(raw.recv_k().await).contains("unexpected redacted_request"));

    // An unknown message (gap 12): an envelope whose body this version does not know.
    let mut raw = Raw::open(&tees, config()).await;
    let mut unknown = prost::Message::encode_to_vec(&Envelope {
        session_id: raw.sid.to_vec(),
        body: None,
    });
    unknown.extend_from_slice(&[0x9a, 0x06, 0x00]);
    let _ = raw.k_tx.send(unknown).await;
    assert!(reason(raw.recv_k().await).contains("unknown or empty message"));

    // A message of another session on this session's channel.
    let mut raw = Raw::open(&tees, config()).await;
    let _ = raw
        .k_tx
        .send(wire::encode(&[7; 16], Body::TcpReady(TcpReady {})))
        .await;
    assert!(reason(raw.recv_k().await).contains("another session"));

    // A duplicate request_connection.
    let mut raw = Raw::open(&tees, config()).await;
    for _ in 0..2 {
        raw.send_k(Body::RequestConnection(RequestConnection {
            hostname: HOSTNAME.into(),
            port: u32::from(site.addr.port()),
            ..Default::default()
        }))
        .await;
    }
    assert!(matches!(raw.recv_k().await, Some(Body::ConnectionReady(_))));
    assert!(reason(raw.recv_k().await).contains("unexpected request_connection"));

    // The client gone: right after session_ready, mid-handshake, after the request.
    drop(Raw::open(&tees, config()).await);
    let mut raw = Raw::open(&tees, config()).await;
    raw.send_k(Body::RequestConnection(RequestConnection {
        hostname: HOSTNAME.into(),
        port: u32::from(site.addr.port()),
        ..Default::default()
    }))
    .await;
    raw.recv_k().await;
    raw.send_k(Body::TcpReady(TcpReady {})).await;
    drop(raw);
    let mut raw = Raw::open(&tees, config()).await;
    raw.handshake(&site).await;
    raw.request(&tees, &site).await;
    drop(raw);
    wait_empty(&tees).await;

    // Duplicate redaction_streams: TEE_T ends the session, TEE_K tells the client too.
    let mut raw = Raw::open(&tees, config()).await;
    raw.handshake(&site).await;
    let streams = raw.request(&tees, &site).await;
    raw.send_t(Body::RedactionStreams(streams)).await;
    assert!(reason(raw.recv_t().await).contains("duplicate redaction_streams"));
    assert!(reason(raw.recv_k().await).contains("duplicate redaction_streams"));

    // `finished` from a client is refused (gap 3): only TEE_K's link may send it.
    let mut raw = Raw::open(&tees, config()).await;
    raw.handshake(&site).await;
    raw.request(&tees, &site).await;
    raw.send_t(Body::Finished(Finished::default())).await;
    assert!(reason(raw.recv_t().await).contains("unexpected finished"));

    // A tampered response record: its tag fails at TEE_T, and no keystream ever reaches the client.
    let mut raw = Raw::open(&tees, config()).await;
    raw.handshake(&site).await;
    raw.request(&tees, &site).await;
    let mut records = raw.records().await;
    let mut tampered = records[0].ciphertext.to_vec();
    tampered[0] ^= 1;
    records[0].ciphertext = tampered.into();
    raw.send_t(Body::BatchedEncryptedResponses(BatchedEncryptedResponses {
        responses: records,
        eof: true,
    }))
    .await;
    assert!(reason(raw.recv_t().await).contains("does not verify"));
    assert!(reason(raw.recv_k().await).contains("does not verify"));

    // A dropped record: sequence numbers must be contiguous.
    let mut raw = Raw::open(&tees, config()).await;
    raw.handshake(&site).await;
    raw.request(&tees, &site).await;
    let mut records = raw.records().await;
    records.remove(0);
    raw.send_t(Body::BatchedEncryptedResponses(BatchedEncryptedResponses {
        responses: records,
        eof: true,
    }))
    .await;
    assert!(reason(raw.recv_t().await).contains("not contiguous"));

    // An empty TLS 1.3 record (no inner type): refused before TEE_K is asked anything.
    let mut raw = Raw::open(&tees, config()).await;
    raw.handshake(&site).await;
    raw.request(&tees, &site).await;
    let mut records = raw.records().await;
    records[0].ciphertext.clear();
    records[0].header = vec![23, 3, 3, 0, 16];
    raw.send_t(Body::BatchedEncryptedResponses(BatchedEncryptedResponses {
        responses: records,
        eof: true,
    }))
    .await;
    assert!(reason(raw.recv_t().await).contains("empty record"));

    // A client naming a session TEE_T does not know.
    let mut raw = Raw::open(&tees, config()).await;
    raw.connect_t(&tees).await;
    raw.sid = [0x42; 16];
    raw.send_t(Body::RedactionStreams(RedactionStreams::default()))
        .await;
    assert!(reason(raw.recv_t().await).contains("unknown session"));
    drop(raw);

    stop.cancel();
    let proofs = bystander
        .await
        .expect("the bystander's proofs all succeeded");
    assert!(proofs >= 1);
    wait_empty(&tees).await;
    let proved = prove(&tls13(), &tees.k_end, &tees.t_end).await;
    assert!(proved.is_ok(), "a good proof after the faults: {proved:?}");
    wait_empty(&tees).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_ends_the_session() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let big = ChannelConfig {
        max_message_size: 16 * 1024 * 1024,
        ..ChannelConfig::default()
    };
    let mut raw = Raw::open(&tees, big).await;
    let sent = raw.k_tx.send(vec![0u8; 9 * 1024 * 1024]).await;
    // Refused by the sender's limit or closed by TEE_K's: either way no message gets through.
    let answer = tokio::time::timeout(WAIT, raw.k_rx.recv())
        .await
        .expect("an answer");
    assert!(
        sent.is_err() || !matches!(answer, Ok(Some(_))),
        "{answer:?}"
    );
    drop(raw);
    wait_empty(&tees).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_deadline_ends_a_stalled_session() {
    let pki = TestPki::new();
    let limits = Limits {
        session_deadline: Duration::from_millis(500),
        ..Limits::default()
    };
    let tees = start_tees_with(&pki, limits).await;
    let mut raw = Raw::open(&tees, ChannelConfig::default()).await;
    assert!(reason(raw.recv_k().await).contains("session deadline exceeded"));
    wait_empty(&tees).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_with_the_reason() {
    let pki = TestPki::new();
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let tees = start_tees_with(&pki, limits).await;
    let site = Site::start(&pki.ecdsa);
    // Stalled after the handshake: TEE_K waits for the request, TEE_T for the streams.
    let mut raw = Raw::open(&tees, ChannelConfig::default()).await;
    raw.handshake(&site).await;
    assert!(reason(raw.recv_k().await).contains("idle for too long"));
    drop(raw);
    wait_empty(&tees).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_channels_idle_past_the_limit_are_closed_and_the_prover_opens_new_ones() {
    let pki = TestPki::new();
    let limits = Limits {
        idle_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let tees = start_tees_with(&pki, limits).await;
    let site = Site::start(&pki.ecdsa);
    let mut prover = Prover::new(tees.k_end.clone(), tees.t_end.clone());
    let first = prover
        .prove(&request(&site, "/balance", "0100"))
        .await
        .expect("first proof");
    // Both TEEs close a channel that waits past their idle limit for its next session.
    tokio::time::timeout(WAIT, async {
        tees.k.channels().wait_empty().await;
        tees.t.channels().wait_empty().await;
    })
    .await
    .expect("idle kept channels closed");
    let second = prover
        .prove(&request(&site, "/balance", "0101"))
        .await
        .expect("a proof on new channels");
    assert_ne!(first.session_id, second.session_id);
    assert!(String::from_utf8_lossy(&second.response).contains("0101.00"));
    prover.close().await;
    wait_empty(&tees).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tee_t_channel_carries_one_session_at_a_time() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let site = Site::start(&pki.ecdsa);
    let mut raw = Raw::open(&tees, ChannelConfig::default()).await;
    raw.handshake(&site).await;
    raw.request(&tees, &site).await;
    // A message for another session on the channel attached to this one, while this one runs.
    let (_, tx) = raw.t.as_ref().expect("TEE_T channel");
    let other = wire::encode(
        &[7; 16],
        Body::BatchedEncryptedResponses(Default::default()),
    );
    let _ = tx.send(other).await;
    assert!(reason(raw.recv_t().await).contains("another session while this one runs"));
    assert!(reason(raw.recv_k().await).contains("another session while this one runs"));
    drop(raw);
    wait_empty(&tees).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tee_t_gone_ends_the_sessions_it_carried() {
    let pki = TestPki::new();
    let mut tees = start_tees(&pki).await;
    let site = Site::start(&pki.ecdsa);
    let mut raw = Raw::open(&tees, ChannelConfig::default()).await;
    raw.handshake(&site).await;
    tokio::time::timeout(WAIT, tees.t.shutdown(Duration::from_millis(100)))
        .await
        .expect("TEE_T shut down");
    if let Some(serving) = tees.t_serving.take() {
        let _ = tokio::time::timeout(WAIT, serving.stop()).await;
    }
    assert!(reason(raw.recv_k().await).contains("TEE_T"));
    let err = prove(
        &request(&site, "/balance", "0001"),
        &tees.k_end,
        &tees.t_end,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ClientError::Rejected("TEE_K", reason) if reason.contains("TEE_T unreachable")),
        "{err}"
    );
    tokio::time::timeout(WAIT, tees.k.sessions().wait_empty())
        .await
        .expect("TEE_K's sessions ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_for_a_live_session_is_refused_and_the_session_completes() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let site = Site::start(&pki.ecdsa);
    let mut raw = Raw::open(&tees, ChannelConfig::default()).await;
    raw.handshake(&site).await;
    let streams = raw.request(&tees, &site).await;
    // Another channel naming this live session: refused, and neither its message (a duplicate
    // redaction_streams, which would end the session) nor its end reaches the session.
    let intruder = raw
        .connector
        .connect(&tees.t_end.url, tees.t_end.key, &Identity::generate())
        .await
        .expect("connect TEE_T");
    let (mut rx, tx) = intruder.split();
    let _ = tx
        .send(wire::encode(&raw.sid, Body::RedactionStreams(streams)))
        .await;
    assert!(reason(recv(&mut rx, &raw.sid).await).contains("session already has a client"));
    drop((rx, tx));
    // The session goes on to both signed outputs.
    let responses = raw.records().await;
    raw.send_t(Body::BatchedEncryptedResponses(BatchedEncryptedResponses {
        responses,
        eof: true,
    }))
    .await;
    loop {
        match raw.recv_k().await {
            Some(Body::BatchedDecryptionStreams(streams)) if streams.closed => break,
            Some(Body::BatchedDecryptionStreams(_)) => {}
            other => panic!(
                "expected keystreams, got {:?}",
                other.map(|b| wire::body_name(&b))
            ),
        }
    }
    raw.send_k(Body::ResponseRedactionSpec(ResponseRedactionSpec::default()))
        .await;
    let t_signed = raw.recv_t().await;
    assert!(
        matches!(t_signed, Some(Body::SignedMessage(_))),
        "T: {:?}",
        t_signed.map(|b| wire::body_name(&b))
    );
    let k_signed = raw.recv_k().await;
    assert!(
        matches!(k_signed, Some(Body::SignedMessage(_))),
        "K: {:?}",
        k_signed.map(|b| wire::body_name(&b))
    );
    drop(raw);
    wait_empty(&tees).await;
}
