//! The services against a TLS stack not written in Rust: OpenSSL `s_server -www`, one per suite, for every
//! one of the nine suites this OpenSSL offers, through TEE_K, TEE_T and the client; each bundle verified.
//! (The rustls site runs in `service_e2e.rs`.)
//!
//! Needs the `openssl` binary (`apt-get install -y openssl`; .ci/run installs it); without it the test says
//! so loudly and skips.

mod common;
mod service_common;

use common::openssl::{SServer, openssl_available, openssl_offers};
use common::{HOSTNAME, TestPki};
use service_common::{start_tees, wait_empty};
use std::path::PathBuf;
use tessera_tee::CipherSuite;
use tessera_tee::service::{ProveRequest, Reveal, prove};
use tessera_tee::verify::{VerifierConfig, verify_bundle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_suite_against_openssl_through_the_services() {
    if !openssl_available() {
        return;
    }
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tessera-tee-svc-openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = VerifierConfig::new(tees.k.signer_address(), tees.t.signer_address());
    let mut tested = Vec::new();
    for suite in CipherSuite::ALL {
        if !openssl_offers(suite) {
            eprintln!("openssl does not offer {suite}; not tested against it");
            continue;
        }
        let server = SServer::start(&dir, &pki, suite);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
        let request = ProveRequest::get(&format!("https://{HOSTNAME}:{}/", server.port))
            .unwrap()
            .force_suite(suite)
            .connect_to(addr)
            .reveal(Reveal::Regex("Cipher is [A-Z0-9_-]+".into()));
        let proved = prove(&request, &tees.k_end, &tees.t_end)
            .await
            .unwrap_or_else(|e| panic!("{suite}: {e}"));
        drop(server);
        let page = String::from_utf8_lossy(&proved.response);
        assert!(
            page.starts_with("HTTP/1.0 200 ok\r\n"),
            "{suite}: {page:.200}"
        );
        let proof =
            verify_bundle(&proved.bundle, &config).unwrap_or_else(|e| panic!("{suite}: {e}"));
        let shown = String::from_utf8_lossy(&proof.response);
        assert!(
            shown.contains(&format!("Cipher is {}", suite.openssl_name())),
            "{suite}: {shown}"
        );
        assert!(
            shown.starts_with("HTTP/1.0 200 ok\r\n*"),
            "{suite}: the rest is hidden"
        );
        tested.push(suite);
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "services against OpenSSL: {} suites: {tested:?}",
        tested.len()
    );
    assert!(tested.contains(&CipherSuite::Tls13Aes128GcmSha256));
    assert!(tested.contains(&CipherSuite::Tls12EcdheEcdsaAes128GcmSha256));
    wait_empty(&tees).await;
}
