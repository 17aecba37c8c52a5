//! Shared pieces of the interop tests: an rcgen test CA with an ECDSA and an RSA leaf, and a relay that drives
//! [`RelayedTlsClient`] over a real TCP connection, then sends one HTTP request and reads the response
//! entirely through the split record layer.
#![allow(dead_code)]

pub mod openssl;

use std::io::{Read, Write};
use std::net::TcpStream;
use tessera_tee::record::ContentType;
use tessera_tee::{
    CertificateInfo, CipherSuite, ConnectRequest, EstablishedSession, HandshakeMessage,
    RecordContent, RelayedTlsClient, RootStore, open_via_split, seal_via_split,
};

/// The name every test certificate is issued for.
pub const HOSTNAME: &str = "tessera.test";

/// A fixed RSA test key (rcgen with ring cannot generate RSA keys). Test-only; never trust it.
pub const RSA_TEST_KEY: &str = include_str!("../data/test-rsa-2048.key.pem");

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

/// A test CA with an ECDSA P-256 leaf and an RSA-2048 leaf, both for [`HOSTNAME`].
pub struct TestPki {
    pub ca_pem: String,
    pub ecdsa: Leaf,
    pub rsa: Leaf,
}

impl TestPki {
    pub fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Tessera Test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |key: KeyPair| {
            let mut params = CertificateParams::new(vec![HOSTNAME.to_string()]).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "Tessera Test Server");
            let cert = params.signed_by(&key, &issuer).unwrap();
            Leaf {
                cert_pem: cert.pem(),
                cert_der: cert.der().to_vec(),
                key_pem: key.serialize_pem(),
                key_der: key.serialize_der(),
            }
        };
        let ecdsa = leaf(KeyPair::generate().unwrap());
        let rsa = leaf(KeyPair::from_pem(RSA_TEST_KEY).unwrap());
        TestPki {
            ca_pem: ca_cert.pem(),
            ecdsa,
            rsa,
        }
    }

    pub fn roots(&self) -> RootStore {
        RootStore::from_pem(self.ca_pem.as_bytes()).unwrap()
    }

    /// The leaf a server needs for `suite` (TLS 1.3 and ECDHE-ECDSA: ECDSA; ECDHE-RSA: RSA).
    pub fn leaf_for(&self, suite: CipherSuite) -> &Leaf {
        if suite.needs_rsa_certificate() {
            &self.rsa
        } else {
            &self.ecdsa
        }
    }
}

/// What one split-path exchange produced.
#[derive(Debug)]
pub struct Exchange {
    pub suite: CipherSuite,
    pub alpn: Option<Vec<u8>>,
    pub certificates: Vec<CertificateInfo>,
    /// Application data only, in order.
    pub response: Vec<u8>,
    /// Post-handshake messages seen (and skipped).
    pub post_handshake: Vec<HandshakeMessage>,
    pub close_notify: bool,
    pub records: usize,
}

/// The handshake in rustls over `stream` (the test plays the relaying client), then key extraction.
pub fn handshake(
    stream: &mut TcpStream,
    request: &ConnectRequest,
    roots: &RootStore,
) -> tessera_tee::Result<EstablishedSession> {
    // A guard against a hung peer, not a timing assumption: every read here normally returns at once.
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let mut client = RelayedTlsClient::new(request, roots)?;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let out = client.take_outgoing()?;
        stream.write_all(&out)?;
        if client.is_handshake_complete() {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        client.feed(&buf[..n])?;
    }
    client.finish()
}

/// Handshake through rustls over `stream`, then one request and its response through the split path.
pub fn split_exchange(
    mut stream: TcpStream,
    request: &ConnectRequest,
    roots: &RootStore,
    http_request: &[u8],
) -> tessera_tee::Result<Exchange> {
    let mut session = handshake(&mut stream, request, roots)?;
    let mut buf = vec![0u8; 32 * 1024];

    let record = seal_via_split(
        &mut session.writer,
        ContentType::ApplicationData,
        http_request,
    )?;
    stream.write_all(&record.to_bytes())?;

    let mut exchange = Exchange {
        suite: session.suite,
        alpn: session.alpn.clone(),
        certificates: session.certificates.clone(),
        response: Vec::new(),
        post_handshake: Vec::new(),
        close_notify: false,
        records: 0,
    };
    let mut records = std::mem::take(&mut session.pending_records);
    loop {
        for record in records.drain(..) {
            exchange.records += 1;
            match open_via_split(&mut session.reader, &record)? {
                RecordContent::ApplicationData(data) => exchange.response.extend(data),
                RecordContent::Handshake(messages) => exchange.post_handshake.extend(messages),
                RecordContent::Alert(alert) if alert.is_close_notify() => {
                    exchange.close_notify = true;
                    return Ok(exchange);
                }
                RecordContent::Alert(_) => {
                    return Err(tessera_tee::TeeError::UnexpectedRecord("fatal alert"));
                }
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            eprintln!("{}: TCP EOF without close_notify", exchange.suite);
            assert!(session.splitter.is_empty(), "stream ended inside a record");
            return Ok(exchange);
        }
        records = session.splitter.push(&buf[..n])?;
    }
}

pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {HOSTNAME}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n")
        .into_bytes()
}
