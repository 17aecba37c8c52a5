//! Interop with a local rustls server (rcgen test CA): for all nine suites, a full handshake through
//! [`tessera_tee::RelayedTlsClient`] and one HTTP request/response through the split record layer.

mod common;

use common::{HOSTNAME, TestPki, get_request, split_exchange};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use tessera_tee::{CipherSuite, ConnectRequest, HandshakeMessage, TlsVersion};

type ServerResult = Result<String, Box<dyn std::error::Error + Send + Sync>>;

const BODY_LEN: usize = 40_000; // more than two full records

fn expected_response() -> String {
    let body: String = (0..BODY_LEN)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY_LEN}\r\nConnection: close\r\n\r\n{body}")
}

/// Serves one connection: reads the request (decrypted by rustls), answers, sends close_notify.
fn spawn_server(leaf: &common::Leaf) -> (SocketAddr, JoinHandle<ServerResult>) {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(leaf.cert_der.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone())),
    )
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(
        move || -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
            let (tcp, _) = listener.accept()?;
            let conn = rustls::ServerConnection::new(Arc::new(config))?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.ends_with(b"\r\n\r\n") {
                let n = tls.read(&mut buf)?;
                if n == 0 {
                    return Err("client closed before the request ended".into());
                }
                request.extend_from_slice(&buf[..n]);
            }
            // Two writes: the records fall at different places than the HTTP head and body.
            let response = expected_response();
            let (head, body) = response.split_at(61);
            tls.write_all(head.as_bytes())?;
            tls.write_all(body.as_bytes())?;
            tls.conn.send_close_notify();
            tls.flush()?;
            Ok(String::from_utf8(request)?)
        },
    );
    (addr, handle)
}

fn exchange_with(pki: &TestPki, suite: CipherSuite) {
    let (addr, server) = spawn_server(pki.leaf_for(suite));
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let request = ConnectRequest::new(HOSTNAME).with_suite(suite);
    let exchange = split_exchange(stream, &request, &pki.roots(), &get_request("/split")).unwrap();
    let seen_by_server = server.join().unwrap().unwrap();

    assert_eq!(exchange.suite, suite);
    assert!(
        seen_by_server.starts_with("GET /split HTTP/1.1\r\nHost: tessera.test\r\n"),
        "{seen_by_server}"
    );
    let response = String::from_utf8(exchange.response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200 OK\r\n"),
        "{suite}: {response:.80}"
    );
    assert_eq!(
        response,
        expected_response(),
        "{suite}: whole response, in order"
    );
    assert!(exchange.close_notify, "{suite}: close_notify verified");
    assert_eq!(exchange.alpn.as_deref(), Some(&b"http/1.1"[..]), "ALPN");
    let leaf = &exchange.certificates[0];
    assert_eq!(leaf.dns_names, [HOSTNAME]);
    assert_eq!(leaf.subject_cn.as_deref(), Some("Tessera Test Server"));
    assert_eq!(leaf.issuer_cn.as_deref(), Some("Tessera Test CA"));
    if suite.version() == TlsVersion::Tls13 {
        // rustls servers send session tickets after the handshake: skipped, never application data.
        assert!(
            exchange
                .post_handshake
                .contains(&HandshakeMessage::NewSessionTicket),
            "{suite}"
        );
    }
}

#[test]
fn every_suite_against_a_rustls_server() {
    let pki = TestPki::new();
    for suite in CipherSuite::ALL {
        exchange_with(&pki, suite);
    }
}

#[test]
fn default_negotiation_picks_tls13_and_forced_version_12_works_with_pem_file_roots() {
    let pki = TestPki::new();
    let (addr, server) = spawn_server(&pki.ecdsa);
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let ex = split_exchange(
        stream,
        &ConnectRequest::new(HOSTNAME),
        &pki.roots(),
        &get_request("/"),
    )
    .unwrap();
    server.join().unwrap().unwrap();
    assert_eq!(ex.suite.version(), TlsVersion::Tls13);

    // Roots from a PEM file this time.
    let file = std::env::temp_dir().join(format!("tessera-tee-ca-{}.pem", std::process::id()));
    std::fs::write(&file, &pki.ca_pem).unwrap();
    let roots = tessera_tee::RootStore::from_pem_file(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(roots.len(), 1);
    let (addr, server) = spawn_server(&pki.ecdsa);
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let request = ConnectRequest::new(HOSTNAME).with_version(TlsVersion::Tls12);
    let ex = split_exchange(stream, &request, &roots, &get_request("/")).unwrap();
    server.join().unwrap().unwrap();
    assert_eq!(ex.suite.version(), TlsVersion::Tls12);
}

#[test]
fn wrong_hostname_and_unknown_ca_are_rejected() {
    let pki = TestPki::new();
    for (name, roots) in [
        ("other.test", pki.roots()),
        (HOSTNAME, TestPki::new().roots()),
        (HOSTNAME, tessera_tee::RootStore::webpki()),
    ] {
        let (addr, _server) = spawn_server(&pki.ecdsa);
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let err = split_exchange(
            stream,
            &ConnectRequest::new(name),
            &roots,
            &get_request("/"),
        )
        .unwrap_err();
        assert!(matches!(err, tessera_tee::TeeError::Tls(_)), "{err}");
    }
}

#[test]
fn contradicting_force_is_an_error() {
    let request = ConnectRequest::new(HOSTNAME)
        .with_version(TlsVersion::Tls12)
        .with_suite(CipherSuite::Tls13Aes128GcmSha256);
    assert!(
        tessera_tee::RelayedTlsClient::new(&request, &tessera_tee::RootStore::webpki()).is_err()
    );
}

/// TLS 1.3 KeyUpdate both ways: the rustls server updates its keys mid-response and requests ours; the split
/// reader follows (else "part two" would not decrypt), and the split writer answers with its own KeyUpdate and
/// sends under the next generation (else the server could not echo).
#[test]
fn key_update_both_ways_against_a_rustls_server() {
    use tessera_tee::record::ContentType;
    use tessera_tee::{RecordContent, open_via_split, seal_key_update_via_split, seal_via_split};

    let pki = TestPki::new();
    for suite in CipherSuite::ALL
        .into_iter()
        .filter(|s| s.version() == TlsVersion::Tls13)
    {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(pki.ecdsa.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.ecdsa.key_der.clone())),
        )
        .unwrap();
        config.send_tls13_tickets = 0;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || -> ServerResult {
            let (tcp, _) = listener.accept()?;
            let conn = rustls::ServerConnection::new(Arc::new(config))?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"\r\n\r\n") {
                let n = tls.read(&mut buf)?;
                if n == 0 {
                    return Err("EOF before the request".into());
                }
                seen.extend_from_slice(&buf[..n]);
            }
            tls.write_all(b"part one|")?;
            tls.flush()?;
            tls.conn.refresh_traffic_keys()?; // KeyUpdate(update_requested)
            tls.write_all(b"part two|")?;
            tls.flush()?;
            while !seen.ends_with(b"second\n") {
                let n = tls.read(&mut buf)?;
                if n == 0 {
                    return Err("EOF before the second message".into());
                }
                seen.extend_from_slice(&buf[..n]);
            }
            tls.write_all(b"echo: second\n")?;
            tls.conn.send_close_notify();
            tls.flush()?;
            Ok(String::from_utf8(seen)?)
        });

        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let request = ConnectRequest::new(HOSTNAME).with_suite(suite);
        let mut session = common::handshake(&mut stream, &request, &pki.roots()).unwrap();
        let get = get_request("/");
        let record =
            seal_via_split(&mut session.writer, ContentType::ApplicationData, &get).unwrap();
        stream.write_all(&record.to_bytes()).unwrap();

        let mut response = Vec::new();
        let mut update_requested = false;
        let mut sent_second = false;
        let mut closed = false;
        let mut buf = vec![0u8; 32 * 1024];
        let mut records = std::mem::take(&mut session.pending_records);
        while !closed {
            for record in records.drain(..) {
                match open_via_split(&mut session.reader, &record).unwrap() {
                    RecordContent::ApplicationData(data) => response.extend(data),
                    RecordContent::Handshake(messages) => {
                        update_requested |= messages.contains(&HandshakeMessage::KeyUpdate {
                            update_requested: true,
                        });
                    }
                    RecordContent::Alert(alert) => {
                        assert!(alert.is_close_notify());
                        closed = true;
                    }
                }
            }
            if response.ends_with(b"part two|") && !sent_second {
                assert!(
                    update_requested,
                    "{suite}: the server asked for our KeyUpdate"
                );
                assert_eq!(
                    session.reader.next_seq(),
                    1,
                    "{suite}: the reader restarted at 0"
                );
                let update = seal_key_update_via_split(&mut session.writer, false).unwrap();
                let second = seal_via_split(
                    &mut session.writer,
                    ContentType::ApplicationData,
                    b"second\n",
                )
                .unwrap();
                assert_eq!(
                    session.writer.next_seq(),
                    1,
                    "{suite}: the writer restarted at 0"
                );
                stream
                    .write_all(&[update.to_bytes(), second.to_bytes()].concat())
                    .unwrap();
                sent_second = true;
            }
            if !closed {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "{suite}: EOF before close_notify");
                records = session.splitter.push(&buf[..n]).unwrap();
            }
        }
        let seen = server.join().unwrap().unwrap();
        assert!(seen.ends_with("\r\n\r\nsecond\n"), "{suite}: {seen}");
        assert_eq!(response, b"part one|part two|echo: second\n", "{suite}");
    }
}

/// The relay may cut the server's bytes anywhere: a handshake fed one byte at a time still completes, and the
/// response arrives whole.
#[test]
fn handshake_fed_one_byte_at_a_time() {
    use tessera_tee::record::ContentType;
    use tessera_tee::{RecordContent, RelayedTlsClient, open_via_split, seal_via_split};

    let pki = TestPki::new();
    for suite in [
        CipherSuite::Tls13ChaCha20Poly1305Sha256,
        CipherSuite::Tls12EcdheEcdsaAes128GcmSha256,
    ] {
        let (addr, server) = spawn_server(&pki.ecdsa);
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let mut client = RelayedTlsClient::new(
            &ConnectRequest::new(HOSTNAME).with_suite(suite),
            &pki.roots(),
        )
        .unwrap();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            stream.write_all(&client.take_outgoing().unwrap()).unwrap();
            if client.is_handshake_complete() {
                break;
            }
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0);
            for byte in &buf[..n] {
                client.feed(std::slice::from_ref(byte)).unwrap();
            }
        }
        let mut session = client.finish().unwrap();
        let record = seal_via_split(
            &mut session.writer,
            ContentType::ApplicationData,
            &get_request("/"),
        )
        .unwrap();
        stream.write_all(&record.to_bytes()).unwrap();
        let mut response = Vec::new();
        let mut records = std::mem::take(&mut session.pending_records);
        'read: loop {
            for record in records.drain(..) {
                match open_via_split(&mut session.reader, &record).unwrap() {
                    RecordContent::ApplicationData(data) => response.extend(data),
                    RecordContent::Alert(a) if a.is_close_notify() => break 'read,
                    _ => {}
                }
            }
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0);
            for byte in &buf[..n] {
                records.extend(session.splitter.push(std::slice::from_ref(byte)).unwrap());
            }
        }
        server.join().unwrap().unwrap();
        assert_eq!(
            String::from_utf8(response).unwrap(),
            expected_response(),
            "{suite}"
        );
    }
}
