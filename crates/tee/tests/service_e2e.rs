//! TEE_K, TEE_T and the client over real channels against a local rustls HTTPS site: a page proven with a
//! hidden cookie (`sensitive`), a header revealed only through T_OUTPUT (`sensitive_proof`), one JSON member
//! revealed and the rest hidden; the bundle checked by the offline verifier with pinned signers, for TLS 1.3
//! and TLS 1.2 suites of each AEAD family; then the registries are empty.

mod common;

use common::{HOSTNAME, TestPki};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_channel::Identity;
use tessera_tee::CipherSuite;
use tessera_tee::service::{
    ClientError, ProveRequest, Reveal, TeeEndpoint, TeeK, TeeKConfig, TeeT, TeeTConfig, prove,
};
use tessera_tee::signing::Signer;
use tessera_tee::verify::{VerifierConfig, verify_bundle};

/// A local HTTPS site (rustls, one thread per connection): `/balance` answers with the balance of the
/// account named by the cookie, `/chunked` the same in chunked encoding. It records every request it saw.
struct Site {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Site {
    fn start(leaf: &common::Leaf) -> Site {
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone())),
            )
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                let (config, log) = (config.clone(), log.clone());
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(20)));
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let request = String::from_utf8_lossy(&request).into_owned();
                    let balance = if request.contains("Cookie: session=s3cr3t-") {
                        let at = request.find("s3cr3t-").unwrap() + 7;
                        format!("{}.00", &request[at..at + 4])
                    } else {
                        "0".to_owned()
                    };
                    let body = format!("{{\"user\":\"alice\",\"balance\":\"{balance}\"}}");
                    let response = if request.starts_with("GET /chunked ") {
                        let (a, b) = body.split_at(10);
                        format!(
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                            a.len(),
                            b.len()
                        )
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    log.lock().unwrap().push(request);
                    let _ = tls.write_all(response.as_bytes());
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        Site { addr, seen }
    }
}

struct Tees {
    k: TeeK,
    t: TeeT,
    k_end: TeeEndpoint,
    t_end: TeeEndpoint,
}

async fn start_tees(pki: &TestPki) -> Tees {
    let k_identity = Identity::generate();
    let t = TeeT::new(TeeTConfig::new(
        Identity::generate(),
        Signer::generate(),
        Some(k_identity.public_key()),
    ));
    let t_serving = t.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let t_addr = t_serving.local_addr();
    std::mem::forget(t_serving); // serves until the test process ends
    let k = TeeK::new(
        TeeKConfig::new(
            k_identity,
            Signer::generate(),
            format!("ws://{t_addr}/teek"),
            t.public_key(),
        )
        .with_roots(pki.roots()),
    );
    let k_serving = k.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let k_end = TeeEndpoint::new(k_serving.local_addr().to_string(), k.public_key());
    std::mem::forget(k_serving);
    let t_end = TeeEndpoint::new(t_addr.to_string(), t.public_key());
    Tees { k, t, k_end, t_end }
}

fn request(site: &Site, path: &str, account: &str) -> ProveRequest {
    ProveRequest::get(&format!("https://{HOSTNAME}:{}{path}", site.addr.port()))
        .unwrap()
        .header("Cookie", format!("session=s3cr3t-{account}"))
        .hide_header("Cookie")
        .header("X-Account", format!("acct-{account}"))
        .proof_header("X-Account")
        .reveal(Reveal::JsonPath("$.user".into()))
        .nonce(b"nonce-1".to_vec())
        .connect_to(site.addr)
}

async fn wait_empty(tees: &Tees) {
    tokio::time::timeout(Duration::from_secs(10), async {
        tees.k.sessions().wait_empty().await;
        tees.t.sessions().wait_empty().await;
    })
    .await
    .expect("every session ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proves_a_page_with_hidden_cookie_proof_header_and_revealed_member() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let ecdsa = Site::start(&pki.ecdsa);
    let rsa = Site::start(&pki.rsa);
    for (i, suite) in [
        CipherSuite::Tls13Aes128GcmSha256,
        CipherSuite::Tls13ChaCha20Poly1305Sha256,
        CipherSuite::Tls13Aes256GcmSha384,
        CipherSuite::Tls12EcdheEcdsaAes128GcmSha256,
        CipherSuite::Tls12EcdheRsaChaCha20Poly1305Sha256,
    ]
    .into_iter()
    .enumerate()
    {
        let site = if suite.needs_rsa_certificate() {
            &rsa
        } else {
            &ecdsa
        };
        let account = format!("{:04}", 1000 + i);
        let path = if i % 2 == 0 { "/balance" } else { "/chunked" };
        let proved = prove(
            &request(site, path, &account).force_suite(suite),
            &tees.k_end,
            &tees.t_end,
        )
        .await
        .unwrap_or_else(|e| panic!("{suite}: {e}"));
        assert_eq!(proved.suite, suite);
        let plain = String::from_utf8(proved.response.clone()).unwrap();
        assert!(plain.contains(&format!("{account}.00")), "{suite}: {plain}");
        assert!(
            site.seen
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.contains(&format!("Cookie: session=s3cr3t-{account}\r\n"))),
            "the site must see the real cookie"
        );

        let mut config = VerifierConfig::new(tees.k.signer_address(), tees.t.signer_address());
        config.nonce = Some(b"nonce-1".to_vec());
        let proof =
            verify_bundle(&proved.bundle, &config).unwrap_or_else(|e| panic!("{suite}: {e}"));
        let shown = String::from_utf8(proof.response.clone()).unwrap();
        assert_eq!(proof.response, proved.revealed, "{suite}");
        assert!(
            shown.starts_with("HTTP/1.1 200 OK\r\n*"),
            "{suite}: {shown}"
        );
        // Chunked: the chunk framing inside the member is revealed with it.
        assert!(
            shown.contains("\"user\":\"a") && shown.contains("lice\""),
            "{suite}: {shown}"
        );
        assert!(
            !shown.contains(&account),
            "{suite}: the balance must stay hidden: {shown}"
        );
        let request_shown = String::from_utf8(proof.request).unwrap();
        assert!(
            request_shown.contains(&format!("X-Account: acct-{account}\r\n")),
            "{request_shown}"
        );
        assert!(!request_shown.contains("s3cr3t"), "{request_shown}");
        assert!(request_shown.contains("Cookie: ******"), "{request_shown}");
        assert_eq!(proof.hostname, HOSTNAME);
        assert_eq!(proof.port, u32::from(site.addr.port()));
        // Another nonce or swapped signers: refused.
        let mut other = config.clone();
        other.nonce = Some(b"nonce-2".to_vec());
        assert!(verify_bundle(&proved.bundle, &other).is_err());
        let swapped = VerifierConfig::new(tees.t.signer_address(), tees.k.signer_address());
        assert!(verify_bundle(&proved.bundle, &swapped).is_err());
        // The proof file round trip the CLI uses.
        let json = tessera_tee::proof_file::to_json(&proved.bundle);
        let back = tessera_tee::proof_file::from_json(json.as_bytes()).unwrap();
        assert_eq!(
            verify_bundle(&back, &config).unwrap().response,
            proof.response
        );
    }
    wait_empty(&tees).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_session_reports_why_and_leaves_nothing() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let site = Site::start(&pki.ecdsa);
    // TEE_K refuses a request that hides its Host header (the request line and Host stay visible).
    let bad = request(&site, "/balance", "0001")
        .header("X-Pad", "x")
        .hide_header("Host");
    let err = prove(&bad, &tees.k_end, &tees.t_end).await.unwrap_err();
    assert!(matches!(err, ClientError::Request(_)), "{err}");
    // A website whose name is not on its certificate: TEE_K's handshake fails, the client is told why.
    let wrong_name = ProveRequest::get(&format!("https://other.test:{}/", site.addr.port()))
        .unwrap()
        .connect_to(site.addr);
    let err = prove(&wrong_name, &tees.k_end, &tees.t_end)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Rejected("TEE_K", reason) if reason.contains("TLS handshake")),
        "{err}"
    );
    // A pinned key that is not TEE_T's: the channel is refused before any protocol message.
    let wrong_key = TeeEndpoint::new(tees.t_end.url.clone(), tees.k_end.key);
    let err = prove(&request(&site, "/balance", "0002"), &tees.k_end, &wrong_key)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Channel("TEE_T", _)), "{err}");
    // And a good proof still works afterwards.
    prove(
        &request(&site, "/balance", "0003"),
        &tees.k_end,
        &tees.t_end,
    )
    .await
    .unwrap();
    wait_empty(&tees).await;
}
