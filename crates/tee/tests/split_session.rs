//! One whole TEE session in-process, without the channel: TEE_K's handshake relayed by the client to a local
//! rustls server, the request redacted (cookie hidden, one header as `sensitive_proof`), TEE_T fixing the
//! ciphertext with the redaction streams and tagging it, the response records verified by TEE_T from tag
//! secrets, keystreams released to the client, the response partly hidden, both outputs signed and the
//! bundle checked by the offline verifier — for a TLS 1.3 and a TLS 1.2 suite of each AEAD family.

mod common;

use common::{HOSTNAME, TestPki};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use tessera_tee::content::split_inner_plaintext;
use tessera_tee::proto::{
    KOutput, ProofStream, RangeType, RecordInfo, RequestRange, ResponseEnd, ResponseRange, TOutput,
};
use tessera_tee::redaction::{check_streams, redact_request, validate_redacted_request};
use tessera_tee::signing::Signer;
use tessera_tee::verify::{VerifierConfig, verify_bundle};
use tessera_tee::{
    CipherSuite, ConnectRequest, ContentType, ProtectedPayload, TlsVersion, compute_tag, verify_tag,
};

const BODY: &str = "{\"user\":\"alice\",\"balance\":\"1234.56\"}";

fn serve_one(leaf: &common::Leaf) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
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
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut tls = rustls::StreamOwned::new(
            rustls::ServerConnection::new(Arc::new(config)).unwrap(),
            tcp,
        );
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.ends_with(b"\r\n\r\n") {
            let n = tls.read(&mut buf).unwrap();
            assert!(n > 0, "client closed early");
            request.extend_from_slice(&buf[..n]);
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        tls.write_all(response.as_bytes()).unwrap();
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        request
    });
    (port, handle)
}

fn range_of(hay: &[u8], needle: &[u8], kind: RangeType) -> RequestRange {
    let start = hay.windows(needle.len()).position(|w| w == needle).unwrap() as u32;
    RequestRange {
        start,
        length: needle.len() as u32,
        r#type: kind as i32,
    }
}

fn session(pki: &TestPki, suite: CipherSuite) {
    let (port, server) = serve_one(pki.leaf_for(suite));
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Steps 2-5: TEE_K's handshake over bytes the client relays.
    let mut tls = common::handshake(
        &mut tcp,
        &ConnectRequest::new(HOSTNAME).with_suite(suite),
        &pki.roots(),
    )
    .unwrap();

    // Step 6: the client redacts.
    let request = format!(
        "GET /balance HTTP/1.1\r\nHost: {HOSTNAME}:{port}\r\nCookie: session=s3cr3t\r\nX-Account: acct-42\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n"
    )
    .into_bytes();
    let ranges = [
        range_of(&request, b"session=s3cr3t", RangeType::Sensitive),
        range_of(&request, b"acct-42", RangeType::SensitiveProof),
    ];
    let (redacted, streams) = redact_request(&request, &ranges).unwrap();

    // Step 7: TEE_K validates and encrypts the redacted request; TEE_T checks, fixes the ciphertext, tags.
    validate_redacted_request(&redacted, HOSTNAME, port).unwrap();
    let mut outgoing = tls
        .writer
        .encrypt(ContentType::ApplicationData, &redacted.redacted, 0)
        .unwrap();
    let masked: Vec<Vec<u8>> = ranges
        .iter()
        .map(|r| redacted.redacted[r.start as usize..(r.start + r.length) as usize].to_vec())
        .collect();
    check_streams(&ranges, &redacted.commitments, &streams, &masked).unwrap();
    for (range, stream) in ranges.iter().zip(&streams.streams) {
        let start = range.start as usize;
        outgoing.ciphertext[start..start + stream.len()]
            .iter_mut()
            .zip(stream)
            .for_each(|(c, s)| *c ^= s);
    }
    let tag = compute_tag(&outgoing.tag_secrets, &outgoing.aad, &outgoing.ciphertext);
    tcp.write_all(&outgoing.into_record(&tag).unwrap().to_bytes())
        .unwrap();
    assert_eq!(
        server.join().unwrap(),
        request,
        "the server must see the real request"
    );

    // Step 8: the client reads records to EOF.
    let mut records = std::mem::take(&mut tls.pending_records);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tcp.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        records.extend(tls.splitter.push(&buf[..n]).unwrap());
    }
    assert!(tls.splitter.is_empty());

    // Steps 9-10: TEE_K gives tag secrets from headers, TEE_T verifies; keystreams reach the client after.
    let (mut infos, mut ciphertext, mut keystream, mut response) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for record in &records {
        let parts = ProtectedPayload::parse(suite, record).unwrap();
        let secrets = tls
            .reader
            .next_record_secrets(&record.header, parts.explicit_nonce)
            .unwrap();
        verify_tag(
            &secrets.tag_secrets,
            &secrets.aad,
            parts.ciphertext,
            parts.tag,
        )
        .unwrap();
        let mut plain = parts.ciphertext.to_vec();
        secrets.keystream.apply(&mut plain).unwrap();
        let (content_type, content) = match suite.version() {
            TlsVersion::Tls13 => split_inner_plaintext(plain).unwrap(),
            TlsVersion::Tls12 => (record.header.content_type, plain),
        };
        let content_type = content_type.to_u8();
        if content_type == 23 {
            ciphertext.extend_from_slice(&parts.ciphertext[..content.len()]);
            keystream.extend_from_slice(&secrets.keystream.expose_secret()[..content.len()]);
            response.extend_from_slice(&content);
        }
        infos.push(RecordInfo {
            seq: secrets.seq,
            content_type: u32::from(content_type),
            length: content.len() as u32,
        });
    }
    assert!(String::from_utf8_lossy(&response).ends_with(BODY));

    // Step 11: the client hides the balance; the bundle carries the ciphertext and keystream of the
    // revealed bytes only (the TEEs sign their digests).
    let hidden_at = response.windows(7).position(|w| w == b"1234.56").unwrap();
    let hidden = [ResponseRange {
        start: hidden_at as u64,
        length: 7,
    }];
    let keystream = tessera_tee::verify::revealed_bytes(&keystream, &hidden).unwrap();
    // TEE_T signs the ciphertext of the revealed bytes only, from the records as they came.
    let ciphertext_pieces: Vec<&[u8]> = ciphertext.chunks(5).collect();
    let revealed_ciphertext_sha256 =
        tessera_tee::verify::revealed_sha256(ciphertext_pieces.iter().copied(), &hidden).unwrap();
    let ciphertext = tessera_tee::verify::revealed_bytes(&ciphertext, &hidden).unwrap();
    assert_eq!(
        revealed_ciphertext_sha256,
        tessera_tee::signing::sha256(&ciphertext)
    );

    // Step 12: TEE_T signs, then TEE_K binds to it.
    let (k_signer, t_signer) = (Signer::generate(), Signer::generate());
    let session_id = vec![9u8; 16];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let proof_range = ranges[1];
    let mut t_output = TOutput {
        session_id: session_id.clone(),
        timestamp_ms: now,
        nonce: b"n".to_vec(),
        response_ciphertext_sha256: tessera_tee::signing::sha256(&ciphertext).to_vec(),
        request_proof_streams: vec![ProofStream {
            start: proof_range.start,
            stream: streams.streams[1].clone(),
        }],
        records: infos.clone(),
        transcript_hash: Vec::new(),
    };
    let (t_signed, digest) = t_signer.sign_t_output(&mut t_output, &ranges).unwrap();
    let mut k_output = KOutput {
        session_id,
        timestamp_ms: now,
        nonce: b"n".to_vec(),
        hostname: HOSTNAME.into(),
        port: u32::from(port),
        cipher_suite: 0,
        tls_version: if suite.version() == TlsVersion::Tls13 {
            0x0304
        } else {
            0x0303
        },
        redacted_request: redacted.redacted.clone(),
        request_ranges: ranges.to_vec(),
        response_keystream_sha256: tessera_tee::signing::sha256(&keystream).to_vec(),
        response_ranges: vec![ResponseRange {
            start: hidden_at as u64,
            length: 7,
        }],
        certificate: None,
        records: infos,
        response_end: ResponseEnd::CloseNotify as i32,
        t_output_digest: Vec::new(),
    };
    let k_signed = k_signer.sign_k_output(&mut k_output, digest).unwrap();
    let bundle = tessera_tee::proto::Bundle {
        k_output: Some(k_signed),
        t_output: Some(t_signed),
        attestations: vec![],
        response_ciphertext: ciphertext,
        response_keystream: keystream,
    };

    let mut config = VerifierConfig::new(k_signer.address(), t_signer.address());
    config.nonce = Some(b"n".to_vec());
    let proof = verify_bundle(&bundle, &config).unwrap();
    let shown = String::from_utf8(proof.response).unwrap();
    assert!(
        shown.ends_with("{\"user\":\"alice\",\"balance\":\"*******\"}"),
        "{suite:?}: {shown}"
    );
    let shown_request = String::from_utf8(proof.request).unwrap();
    assert!(
        shown_request.contains("Cookie: **************\r\n"),
        "{shown_request}"
    );
    assert!(
        shown_request.contains("X-Account: acct-42\r\n"),
        "{shown_request}"
    );
}

#[test]
fn one_session_end_to_end_in_process() {
    let pki = TestPki::new();
    for suite in [
        CipherSuite::Tls13Aes128GcmSha256,
        CipherSuite::Tls13ChaCha20Poly1305Sha256,
        CipherSuite::Tls12EcdheEcdsaAes256GcmSha384,
        CipherSuite::Tls12EcdheRsaChaCha20Poly1305Sha256,
    ] {
        session(&pki, suite);
    }
}
