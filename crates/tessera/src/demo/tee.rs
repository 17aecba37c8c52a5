//! The tee part: TEE_K and TEE_T as services on loopback (each pinned by its channel key, TEE_T pinning
//! TEE_K), a local HTTPS website (rustls, a fresh test CA) whose account page needs a session cookie, and a
//! client that proves the page with the cookie hidden and one JSON member revealed — once over TLS 1.3 and
//! once over TLS 1.2, the second on the channels the first left open (a `Prover`). Each proof is written as a
//! proof file and checked by the offline verifier against the two pinned signer addresses, as `tessera
//! verify` does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tessera_channel::Identity;
use tessera_tee::service::{
    ProveRequest, Prover, Reveal, TeeEndpoint, TeeK, TeeKConfig, TeeT, TeeTConfig,
};
use tessera_tee::signing::Signer;
use tessera_tee::verify::{VerifierConfig, verify_bundle};
use tessera_tee::{CipherSuite, RootStore, proof_file};

const HOST: &str = "bank.tessera.test";
const COOKIE: &str = "session=7f3a9c2e-demo-secret";

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
        .push(DnType::CommonName, "Tessera Demo Bank");
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        leaf_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    })
}

/// The website: serves `/account` to whoever shows the session cookie (a thread per connection), and
/// `401` to anyone else.
fn website(pki: &Pki) -> anyhow::Result<SocketAddr> {
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
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let config = config.clone();
            std::thread::spawn(move || serve_one(config, tcp));
        }
    });
    Ok(addr)
}

/// The most the website reads of a request head before it answers 431 and closes.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

fn serve_one(config: Arc<rustls::ServerConfig>, tcp: std::net::TcpStream) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.ends_with(b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > MAX_REQUEST_HEAD {
            let _ = tls.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return;
        }
    }
    let request = String::from_utf8_lossy(&request);
    let cookie = format!("\r\nCookie: {COOKIE}\r\n");
    let response = if request.starts_with("GET /account ") && request.contains(&cookie) {
        let body = r#"{"user":"alice","balance":"1234.56","iban":"DE89 3704 0044 0532 0130 00"}"#;
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    let _ = tls.write_all(response.as_bytes());
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

pub async fn run() -> anyhow::Result<()> {
    let pki = pki()?;
    let site = website(&pki)?;
    let roots = RootStore::from_pem(pki.ca_pem.as_bytes())?;

    let k_identity = Identity::generate();
    let tee_t = TeeT::new(TeeTConfig::new(
        Identity::generate(),
        Signer::generate(),
        Some(k_identity.public_key()),
    ));
    let t_serving = tee_t.serve("127.0.0.1:0".parse()?).await?;
    let t_addr = t_serving.local_addr();
    let tee_k = TeeK::new(
        TeeKConfig::new(
            k_identity,
            Signer::generate(),
            format!("ws://{t_addr}/teek"),
            tee_t.public_key(),
        )
        .with_roots(roots),
    );
    let k_serving = tee_k.serve("127.0.0.1:0".parse()?).await?;
    let k_end = TeeEndpoint::new(k_serving.local_addr().to_string(), tee_k.public_key());
    let t_end = TeeEndpoint::new(t_addr.to_string(), tee_t.public_key());
    println!(
        "  TEE_K {} (signer {}), TEE_T {} (signer {}); website https://{HOST}:{} on {site}",
        k_serving.local_addr(),
        tee_k.signer_address(),
        t_addr,
        tee_t.signer_address(),
        site.port()
    );

    let dir = super::work_dir("tee")?;
    let outcome = prove_twice(&tee_k, &tee_t, &k_end, &t_end, site, dir.path()).await;
    drop(dir);
    outcome?;

    tee_k.shutdown(Duration::from_secs(2)).await;
    tee_t.shutdown(Duration::from_secs(2)).await;
    k_serving.stop().await;
    t_serving.stop().await;
    let left = tee_k.sessions().len() + tee_t.sessions().len();
    println!("  sessions left: TEE_K and TEE_T together {left}");
    ensure!(left == 0, "{left} TEE session(s) left");
    Ok(())
}

async fn prove_twice(
    tee_k: &TeeK,
    tee_t: &TeeT,
    k_end: &TeeEndpoint,
    t_end: &TeeEndpoint,
    site: SocketAddr,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let nonce = b"demo-verifier-nonce".to_vec();
    // One prover for both proofs: the second starts with `new_session` on the first one's channels.
    let mut prover = Prover::new(k_end.clone(), t_end.clone());
    for (i, suite) in [
        CipherSuite::Tls13ChaCha20Poly1305Sha256,
        CipherSuite::Tls12EcdheEcdsaAes256GcmSha384,
    ]
    .into_iter()
    .enumerate()
    {
        let request = ProveRequest::get(&format!("https://{HOST}:{}/account", site.port()))?
            .header("Cookie", COOKIE)
            .hide_header("Cookie")
            .reveal(Reveal::JsonPath("$.balance".into()))
            .nonce(nonce.clone())
            .force_suite(suite)
            .connect_to(site);
        let started = std::time::Instant::now();
        let proved = prover
            .prove(&request)
            .await
            .with_context(|| format!("proving over {suite}"))?;
        let took = started.elapsed();
        let path = dir.join(format!("proof-{}.json", suite as u16));
        std::fs::write(&path, proof_file::to_json(&proved.bundle))?;
        let size = std::fs::metadata(&path)?.len();

        // The verifier's side: only the file and the two pinned signer addresses.
        let bundle = proof_file::from_json(&std::fs::read(&path)?)?;
        let mut config = VerifierConfig::new(tee_k.signer_address(), tee_t.signer_address());
        config.nonce = Some(nonce.clone());
        let proof = verify_bundle(&bundle, &config).context("verifying the proof")?;
        let request_seen = String::from_utf8_lossy(&proof.request);
        let response_seen = String::from_utf8_lossy(&proof.response);
        ensure!(
            !request_seen.contains("7f3a9c2e") && request_seen.contains("Cookie: *"),
            "the cookie must be hidden from the verifier: {request_seen:?}"
        );
        ensure!(
            response_seen.contains("\"balance\":\"1234.56\"") && !response_seen.contains("DE89"),
            "only the balance is revealed: {response_seen:?}"
        );
        let channels = if i == 0 {
            "new channels"
        } else {
            "the same channels"
        };
        println!(
            "  {suite}: proved in {:.1} ms on {channels}; proof file of {size} bytes, verified against the pinned signers",
            took.as_secs_f64() * 1e3
        );
        println!(
            "    request as the verifier sees it: {:?}",
            request_line(&request_seen)
        );
        println!("    response as the verifier sees it: {response_seen:?}");
        let mut wrong = config.clone();
        wrong.nonce = Some(b"another nonce".to_vec());
        ensure!(
            verify_bundle(&bundle, &wrong).is_err(),
            "another nonce must be refused"
        );
    }
    println!("  the same proof with another verifier nonce: refused");
    prover.close().await;
    Ok(())
}

/// The request without its line breaks, for one printed line.
fn request_line(request: &str) -> String {
    request.trim_end().replace("\r\n", " | ")
}
