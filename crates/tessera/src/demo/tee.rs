//! The tee part: a local HTTPS server (rustls, a fresh test CA) and a client whose TLS runs in TEE_K over
//! bytes it relays; the request is encrypted and the response decrypted through the split AEAD — TEE_K's
//! keystreams and tag secrets, TEE_T's tags — for six suites of TLS 1.3 and TLS 1.2 (the ECDSA ones: rcgen
//! makes no RSA keys). Both roles run in this process here; the TEE services (issue 8) put them apart.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tessera_tee::{
    CipherSuite, ConnectRequest, ContentType, RecordContent, RelayedTlsClient, RootStore,
    open_via_split, seal_via_split,
};

const HOST: &str = "demo.tessera.test";
const BODY: &str = "the website's answer, proven through split AEAD";

/// A test CA and a leaf for [`HOST`], made fresh for the demo.
struct Pki {
    ca_pem: String,
    leaf_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn pki() -> anyhow::Result<Pki> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Tessera Demo CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![HOST.to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "Tessera Demo Website");
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        leaf_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    })
}

/// Serves one HTTPS request with rustls on a thread, then sends close_notify.
fn website(
    pki: &Pki,
) -> anyhow::Result<(
    std::net::SocketAddr,
    std::thread::JoinHandle<anyhow::Result<String>>,
)> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(pki.leaf_der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der.clone())),
    )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let handle = std::thread::spawn(move || -> anyhow::Result<String> {
        let (tcp, _) = listener.accept()?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut tls =
            rustls::StreamOwned::new(rustls::ServerConnection::new(Arc::new(config))?, tcp);
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.ends_with(b"\r\n\r\n") {
            let n = tls.read(&mut buf)?;
            if n == 0 {
                bail!("the client closed before its request ended");
            }
            request.extend_from_slice(&buf[..n]);
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        tls.write_all(response.as_bytes())?;
        tls.conn.send_close_notify();
        tls.flush()?;
        Ok(String::from_utf8_lossy(&request).into_owned())
    });
    Ok((addr, handle))
}

/// What the client learned from one split-path exchange.
struct Transcript {
    suite: CipherSuite,
    issuer: Option<String>,
    response: Vec<u8>,
    records: usize,
    close_notify: bool,
}

/// The client's side: relays TEE_K's handshake bytes, then one request and its response via the split path.
fn fetch(
    addr: std::net::SocketAddr,
    suite: CipherSuite,
    roots: &RootStore,
) -> anyhow::Result<Transcript> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut tls = RelayedTlsClient::new(&ConnectRequest::new(HOST).with_suite(suite), roots)?;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tcp.write_all(&tls.take_outgoing()?)?;
        if tls.is_handshake_complete() {
            break;
        }
        let n = tcp.read(&mut buf)?;
        ensure!(n > 0, "the website closed during the handshake");
        tls.feed(&buf[..n])?;
    }
    let mut session = tls.finish()?;
    let request = format!("GET /price HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    let record = seal_via_split(
        &mut session.writer,
        ContentType::ApplicationData,
        request.as_bytes(),
    )?;
    tcp.write_all(&record.to_bytes())?;

    let mut transcript = Transcript {
        suite: session.suite,
        issuer: session
            .certificates
            .first()
            .and_then(|c| c.issuer_cn.clone()),
        response: Vec::new(),
        records: 0,
        close_notify: false,
    };
    let mut records = std::mem::take(&mut session.pending_records);
    loop {
        for record in records.drain(..) {
            transcript.records += 1;
            match open_via_split(&mut session.reader, &record)? {
                RecordContent::ApplicationData(data) => transcript.response.extend(data),
                RecordContent::Handshake(_) => {}
                RecordContent::Alert(alert) if alert.is_close_notify() => {
                    transcript.close_notify = true;
                    return Ok(transcript);
                }
                RecordContent::Alert(_) => bail!("the website sent a fatal alert"),
            }
        }
        let n = tcp.read(&mut buf)?;
        if n == 0 {
            return Ok(transcript);
        }
        records = session.splitter.push(&buf[..n])?;
    }
}

pub async fn run() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(run_blocking)
        .await
        .context("the tee demo thread")?
}

fn run_blocking() -> anyhow::Result<()> {
    let pki = pki()?;
    let roots = RootStore::from_pem(pki.ca_pem.as_bytes())?;
    let suites = CipherSuite::ALL
        .into_iter()
        .filter(|s| !s.needs_rsa_certificate());
    for suite in suites {
        let (addr, website) = website(&pki)?;
        let transcript = fetch(addr, suite, &roots).with_context(|| format!("{suite}"))?;
        let seen = website
            .join()
            .map_err(|_| anyhow::anyhow!("the website thread panicked"))??;
        ensure!(
            seen.starts_with("GET /price HTTP/1.1\r\n"),
            "the website read {seen:?}"
        );
        let response = String::from_utf8_lossy(&transcript.response);
        ensure!(
            response.ends_with(BODY),
            "{suite}: unexpected response {response:?}"
        );
        ensure!(
            transcript.suite == suite,
            "negotiated {} instead of {suite}",
            transcript.suite
        );
        ensure!(transcript.close_notify, "{suite}: no verified close_notify");
        println!(
            "  {:<46} {} records, tags checked by TEE_T code, cert from {:?}: {:?}",
            suite.to_string(),
            transcript.records,
            transcript.issuer.as_deref().unwrap_or("?"),
            response.lines().next().unwrap_or("")
        );
    }
    Ok(())
}
