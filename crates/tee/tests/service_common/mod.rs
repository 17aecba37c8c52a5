//! What the service tests share: a local rustls HTTPS site and a TEE_K + TEE_T pair on loopback.
#![allow(dead_code)]

use super::common::{self, HOSTNAME, TestPki};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_channel::Identity;
use tessera_tee::service::{
    Limits, ProveRequest, Reveal, Serving, TeeEndpoint, TeeK, TeeKConfig, TeeT, TeeTConfig,
};
use tessera_tee::signing::Signer;

/// A local HTTPS site (rustls, one thread per connection): `/balance` answers with the balance of the
/// account named by the cookie, `/chunked` the same in chunked encoding, `/pieces` the same as `/balance`
/// in several TLS records (cut inside the user's name and inside the balance). It records every request
/// it saw.
pub struct Site {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Site {
    pub fn start(leaf: &common::Leaf) -> Site {
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
                    let truncate = request.starts_with("GET /truncate ");
                    // Where the response is cut into records: one piece, or (`/pieces`) after the
                    // headers, inside "alice", a 1-byte record, and inside the balance.
                    let mut cuts = Vec::new();
                    if request.starts_with("GET /pieces ") {
                        let at = |needle: &str| response.find(needle).unwrap();
                        let alice = at("alice") + 2;
                        let balance = at("\"balance\":\"") + 12;
                        cuts = vec![at("\r\n\r\n") + 4, alice, alice + 1, balance];
                    }
                    log.lock().unwrap().push(request);
                    let mut from = 0;
                    for cut in cuts.into_iter().chain([response.len()]) {
                        let _ = tls.write_all(&response.as_bytes()[from..cut]);
                        let _ = tls.flush();
                        from = cut;
                    }
                    if truncate {
                        // TCP closes without close_notify: the end of the response cannot be proven.
                        let _ = tls.flush();
                        return;
                    }
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        Site { addr, seen }
    }
}

pub struct Tees {
    pub k: TeeK,
    pub t: TeeT,
    pub k_end: TeeEndpoint,
    pub t_end: TeeEndpoint,
    pub k_serving: Option<Serving>,
    pub t_serving: Option<Serving>,
}

pub async fn start_tees(pki: &TestPki) -> Tees {
    start_tees_with(pki, Limits::default()).await
}

pub async fn start_tees_with(pki: &TestPki, limits: Limits) -> Tees {
    let k_identity = Identity::generate();
    let t = TeeT::new(
        TeeTConfig::new(
            Identity::generate(),
            Signer::generate(),
            Some(k_identity.public_key()),
        )
        .with_limits(limits.clone()),
    );
    let t_serving = t.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let t_addr = t_serving.local_addr();
    let k = TeeK::new(
        TeeKConfig::new(
            k_identity,
            Signer::generate(),
            format!("ws://{t_addr}/teek"),
            t.public_key(),
        )
        .with_roots(pki.roots())
        .with_limits(limits),
    );
    let k_serving = k.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let k_end = TeeEndpoint::new(k_serving.local_addr().to_string(), k.public_key());
    let t_end = TeeEndpoint::new(t_addr.to_string(), t.public_key());
    Tees {
        k,
        t,
        k_end,
        t_end,
        k_serving: Some(k_serving),
        t_serving: Some(t_serving),
    }
}

pub fn request(site: &Site, path: &str, account: &str) -> ProveRequest {
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

pub async fn wait_empty(tees: &Tees) {
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        tees.k.sessions().wait_empty().await;
        tees.t.sessions().wait_empty().await;
        tees.k.channels().wait_empty().await;
        tees.t.channels().wait_empty().await;
    })
    .await;
    assert!(
        done.is_ok(),
        "sessions left: TEE_K {} (channels {}), TEE_T {} (channels {})",
        tees.k.sessions().len(),
        tees.k.channels().len(),
        tees.t.sessions().len(),
        tees.t.channels().len()
    );
}
