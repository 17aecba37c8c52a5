//! TEE_K, TEE_T and the client over real channels against a local rustls HTTPS site: a page proven with a
//! hidden cookie (`sensitive`), a header revealed only through T_OUTPUT (`sensitive_proof`), one JSON member
//! revealed and the rest hidden; the bundle checked by the offline verifier with pinned signers, for all nine
//! TLS 1.3 and 1.2 AEAD suites; then the registries are empty.

mod common;
mod service_common;

use common::{HOSTNAME, TestPki};
use service_common::{Site, Tees, request, start_tees, wait_empty};
use tessera_tee::CipherSuite;
use tessera_tee::service::{ClientError, ProveRequest, Proved, Prover, TeeEndpoint, prove};
use tessera_tee::verify::{VerifiedProof, VerifierConfig, verify_bundle};

/// The site with the certificate `suite` needs.
fn site_for<'a>(suite: CipherSuite, ecdsa: &'a Site, rsa: &'a Site) -> &'a Site {
    if suite.needs_rsa_certificate() {
        rsa
    } else {
        ecdsa
    }
}

/// A proof of `path` for `account` in `suite`, what the verifier (the TEEs' pinned signers, the request's
/// nonce) makes of it, and that verifier's configuration.
async fn prove_verified(
    tees: &Tees,
    site: &Site,
    path: &str,
    account: &str,
    suite: CipherSuite,
) -> (Proved, VerifiedProof, VerifierConfig) {
    let proved = prove(
        &request(site, path, account).force_suite(suite),
        &tees.k_end,
        &tees.t_end,
    )
    .await
    .unwrap_or_else(|e| panic!("{suite}: {e}"));
    let mut config = VerifierConfig::new(tees.k.signer_address(), tees.t.signer_address());
    config.nonce = Some(b"nonce-1".to_vec());
    let proof = verify_bundle(&proved.bundle, &config).unwrap_or_else(|e| panic!("{suite}: {e}"));
    (proved, proof, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proves_a_page_with_hidden_cookie_proof_header_and_revealed_member() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let ecdsa = Site::start(&pki.ecdsa);
    let rsa = Site::start(&pki.rsa);
    for (i, suite) in CipherSuite::ALL.into_iter().enumerate() {
        let site = site_for(suite, &ecdsa, &rsa);
        let account = format!("{:04}", 1000 + i);
        let path = if i % 2 == 0 { "/balance" } else { "/chunked" };
        let (proved, proof, config) = prove_verified(&tees, site, path, &account, suite).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prover_keeps_its_channels_across_proofs_and_replaces_them_after_a_failure() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let site = Site::start(&pki.ecdsa);
    let mut config = VerifierConfig::new(tees.k.signer_address(), tees.t.signer_address());
    config.nonce = Some(b"nonce-1".to_vec());
    let channel_ids = |tees: &service_common::Tees| {
        let ids = |r: &tessera_session::Registry| {
            r.sessions()
                .iter()
                .map(|s| s.id())
                .collect::<std::collections::BTreeSet<_>>()
        };
        (ids(tees.k.channels()), ids(tees.t.channels()))
    };
    let mut prover = Prover::new(tees.k_end.clone(), tees.t_end.clone());
    let mut sessions = std::collections::HashSet::new();
    let mut channels = None;
    for i in 0..4 {
        let account = format!("{:04}", 2000 + i);
        let proved = prover
            .prove(&request(&site, "/balance", &account))
            .await
            .unwrap_or_else(|e| panic!("proof {i}: {e}"));
        let plain = String::from_utf8(proved.response.clone()).unwrap();
        assert!(plain.contains(&format!("{account}.00")), "{plain}");
        let proof = verify_bundle(&proved.bundle, &config).unwrap();
        assert_eq!(proof.response, proved.revealed);
        assert!(!String::from_utf8_lossy(&proof.response).contains(&account));
        // A new protocol session each time, on the same two channels.
        assert!(sessions.insert(proved.session_id), "session id reused");
        let now = channel_ids(&tees);
        assert_eq!(
            *channels.get_or_insert_with(|| now.clone()),
            now,
            "proof {i}"
        );
    }
    // A failed proof (a site whose name is not on its certificate) ends its session and its channels; the
    // next proof opens new ones.
    let wrong_name = ProveRequest::get(&format!("https://other.test:{}/", site.addr.port()))
        .unwrap()
        .connect_to(site.addr);
    let err = prover.prove(&wrong_name).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Rejected("TEE_K", reason) if reason.contains("TLS handshake")),
        "{err}"
    );
    let proved = prover
        .prove(&request(&site, "/balance", "2999"))
        .await
        .unwrap();
    verify_bundle(&proved.bundle, &config).unwrap();
    assert!(sessions.insert(proved.session_id));
    let (k_after, _) = channel_ids(&tees);
    let (k_before, _) = channels.unwrap();
    assert!(
        k_after.is_disjoint(&k_before),
        "new channels after a failure"
    );
    prover.close().await;
    wait_empty(&tees).await;
    // A prover dropped without `close` still closes its channels.
    let mut dropped = Prover::new(tees.k_end.clone(), tees.t_end.clone());
    dropped
        .prove(&request(&site, "/balance", "2998"))
        .await
        .unwrap();
    drop(dropped);
    wait_empty(&tees).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_clients_each_prove_only_their_own_secret() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let site = Site::start(&pki.ecdsa);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let account = format!("{:04}", 2000 + i);
        let request = request(&site, "/balance", &account)
            .reveal(tessera_tee::service::Reveal::JsonPath("$.balance".into()));
        let (k, t) = (tees.k_end.clone(), tees.t_end.clone());
        tasks.push(tokio::spawn(async move {
            (account, prove(&request, &k, &t).await)
        }));
    }
    let mut config = VerifierConfig::new(tees.k.signer_address(), tees.t.signer_address());
    config.nonce = Some(b"nonce-1".to_vec());
    let mut sessions = std::collections::HashSet::new();
    for task in tasks {
        let (account, proved) = task.await.unwrap();
        let proved = proved.unwrap_or_else(|e| panic!("client {account}: {e}"));
        let proof = verify_bundle(&proved.bundle, &config).unwrap();
        let shown = String::from_utf8(proof.response).unwrap();
        assert!(
            shown.contains(&format!("\"balance\":\"{account}.00\"")),
            "{account}: {shown}"
        );
        assert_eq!(shown.matches(".00").count(), 1, "{account}: {shown}");
        let request_shown = String::from_utf8(proof.request).unwrap();
        assert!(
            request_shown.contains(&format!("X-Account: acct-{account}\r\n")),
            "{request_shown}"
        );
        assert!(sessions.insert(proof.session_id), "session ids are unique");
    }
    assert_eq!(sessions.len(), 20);
    wait_empty(&tees).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_without_close_notify_is_refused_with_the_reason() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let site = Site::start(&pki.ecdsa);
    let err = prove(
        &request(&site, "/truncate", "0042"),
        &tees.k_end,
        &tees.t_end,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ClientError::Rejected(_, reason) if reason.contains("close_notify")),
        "{err}"
    );
    wait_empty(&tees).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_query_parameter_reaches_the_site_and_stays_hidden() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let site = Site::start(&pki.ecdsa);
    let url = format!(
        "https://{HOSTNAME}:{}/balance?token=tok-secret-9&view=full",
        site.addr.port()
    );
    let request = ProveRequest::get(&url)
        .unwrap()
        .hide_param("token")
        .connect_to(site.addr);
    let proved = prove(&request, &tees.k_end, &tees.t_end).await.unwrap();
    assert!(
        site.seen
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with("GET /balance?token=tok-secret-9&view=full HTTP/1.1\r\n"))
    );
    let config = VerifierConfig::new(tees.k.signer_address(), tees.t.signer_address());
    let proof = verify_bundle(&proved.bundle, &config).unwrap();
    let shown = String::from_utf8(proof.request).unwrap();
    assert!(
        shown.starts_with("GET /balance?token=************&view=full HTTP/1.1\r\n"),
        "{shown}"
    );
    // A value that would add a parameter is refused by TEE_T, whatever the client claims.
    let url = format!(
        "https://{HOSTNAME}:{}/balance?token=a%26b&x=1",
        site.addr.port()
    );
    let ok = ProveRequest::get(&url)
        .unwrap()
        .hide_param("token")
        .connect_to(site.addr);
    prove(&ok, &tees.k_end, &tees.t_end).await.unwrap();
    let err = ProveRequest::get(&format!(
        "https://{HOSTNAME}:{}/balance?x=1",
        site.addr.port()
    ))
    .unwrap()
    .hide_param("token")
    .connect_to(site.addr);
    assert!(matches!(
        prove(&err, &tees.k_end, &tees.t_end).await,
        Err(ClientError::Request(_))
    ));
    wait_empty(&tees).await;
}

/// A response in several TLS records, the revealed member and the hidden balance each cut by a record
/// boundary, in every suite: TEE_T's digest over the records' pieces, TEE_K's keystream made again piece
/// by piece (TLS 1.2 explicit nonces included), and the client's cut all meet the verifier's.
#[tokio::test]
async fn a_response_in_many_records_is_revealed_across_their_boundaries() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let ecdsa = Site::start(&pki.ecdsa);
    let rsa = Site::start(&pki.rsa);
    for (i, suite) in CipherSuite::ALL.into_iter().enumerate() {
        let site = site_for(suite, &ecdsa, &rsa);
        let account = format!("{:04}", 2000 + i);
        let (proved, proof, _) = prove_verified(&tees, site, "/pieces", &account, suite).await;
        assert_eq!(proof.response, proved.revealed, "{suite}");
        let shown = String::from_utf8(proof.response).unwrap();
        assert!(shown.contains("\"user\":\"alice\""), "{suite}: {shown}");
        assert!(!shown.contains(&account), "{suite}: {shown}");
        assert!(
            String::from_utf8_lossy(&proved.response).contains(&format!("{account}.00")),
            "{suite}"
        );
        assert_eq!(
            proved.bundle.response_ciphertext.len(),
            shown.bytes().filter(|&b| b != b'*').count(),
            "{suite}: the bundle carries the revealed ciphertext only"
        );
        let k = <tessera_tee::proto::KOutput as prost::Message>::decode(
            proved.bundle.k_output.as_ref().unwrap().body.as_slice(),
        )
        .unwrap();
        let pieces = k.records.iter().filter(|r| r.content_type == 23).count();
        assert!(pieces >= 5, "{suite}: {pieces} application-data records");
    }
    wait_empty(&tees).await;
}

/// TEE_K refuses `request_connection` (here: a nonce over its limit) while the client's TCP connection
/// to the site is already up and its early `tcp_ready` is on the way or refused: whichever comes first,
/// the client reports TEE_K's reason, not a closed channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_reports_the_reason_whatever_the_order() {
    let pki = TestPki::new();
    let tees = start_tees(&pki).await;
    let site = Site::start(&pki.ecdsa);
    for _ in 0..20 {
        let err = prove(
            &request(&site, "/balance", "0001").nonce(vec![7; 65]),
            &tees.k_end,
            &tees.t_end,
        )
        .await
        .expect_err("a nonce over the limit is refused");
        assert!(
            matches!(&err, ClientError::Rejected("TEE_K", reason) if reason.contains("nonce longer")),
            "{err}"
        );
    }
    wait_empty(&tees).await;
}
