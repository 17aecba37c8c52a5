//! `tessera verify` on proof files: an honest proof prints what it proves (hidden bytes as `*`, proof ranges
//! revealed) in text and JSON; a wrong signer, a wrong nonce, a flipped ciphertext byte, a stale proof and a
//! malformed file each fail with a non-zero exit and the reason.
//!
//! The bundle is signed here with the real signing code (TEE_T first, TEE_K bound to its digest); the whole
//! service path that produces bundles is tested in crates/tee.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use tessera_tee::proof_file;
use tessera_tee::proto::{
    Bundle, KOutput, ProofStream, RangeType, RecordInfo, RequestRange, ResponseEnd, ResponseRange,
    TOutput,
};
use tessera_tee::signing::Signer;

const REQUEST: &[u8] =
    b"GET /me HTTP/1.1\r\nHost: bank.test\r\nCookie: s3cret\r\nX-Account: 42\r\nConnection: close\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 32\r\n\r\n{\"name\":\"alice\",\"token\":\"zz99\"}";
const NONCE: &[u8] = b"\x01\x02\x03\x04";

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A signed bundle of one TLS 1.3 session: cookie hidden, `X-Account` a proof range, the token hidden in the
/// response. `age_ms` back-dates both outputs.
fn bundle(k_signer: &Signer, t_signer: &Signer, age_ms: u64) -> Bundle {
    let cookie = RequestRange {
        start: find(REQUEST, b"s3cret") as u32,
        length: 6,
        r#type: RangeType::Sensitive as i32,
    };
    let account = RequestRange {
        start: find(REQUEST, b"42") as u32,
        length: 2,
        r#type: RangeType::SensitiveProof as i32,
    };
    let account_stream = vec![0x5a, 0xa5];
    let mut redacted = REQUEST.to_vec();
    for i in 0..6 {
        redacted[cookie.start as usize + i] ^= 0x3c;
    }
    for (i, s) in account_stream.iter().enumerate() {
        redacted[account.start as usize + i] ^= s;
    }
    let keystream: Vec<u8> = (0..RESPONSE.len()).map(|i| (i * 7 + 3) as u8).collect();
    let ciphertext: Vec<u8> = RESPONSE
        .iter()
        .zip(&keystream)
        .map(|(p, k)| p ^ k)
        .collect();
    // The bundle carries the ciphertext and keystream of the revealed response bytes only (T_OUTPUT and
    // K_OUTPUT sign their digests).
    let hidden = [ResponseRange {
        start: find(RESPONSE, b"zz99") as u64,
        length: 4,
    }];
    let keystream = tessera_tee::verify::revealed_bytes(&keystream, &hidden).expect("in bounds");
    let ciphertext = tessera_tee::verify::revealed_bytes(&ciphertext, &hidden).expect("in bounds");
    let records = vec![
        RecordInfo {
            seq: 0,
            content_type: 23,
            length: RESPONSE.len() as u32,
        },
        RecordInfo {
            seq: 1,
            content_type: 21,
            length: 2,
        },
    ];
    let session_id = vec![7u8; 16];
    let at = now_ms() - age_ms;
    let mut t = TOutput {
        session_id: session_id.clone(),
        timestamp_ms: at,
        nonce: NONCE.to_vec(),
        response_ciphertext_sha256: tessera_tee::signing::sha256(&ciphertext).to_vec(),
        request_proof_streams: vec![ProofStream {
            start: account.start,
            stream: account_stream,
        }],
        records: records.clone(),
        transcript_hash: Vec::new(),
    };
    let ranges = vec![cookie, account];
    let (t_signed, digest) = t_signer.sign_t_output(&mut t, &ranges).expect("sign T");
    let mut k = KOutput {
        session_id,
        timestamp_ms: at,
        nonce: NONCE.to_vec(),
        hostname: "bank.test".into(),
        port: 8443,
        cipher_suite: 0x1301,
        tls_version: 0x0304,
        redacted_request: redacted,
        request_ranges: ranges,
        response_keystream_sha256: tessera_tee::signing::sha256(&keystream).to_vec(),
        response_ranges: vec![ResponseRange {
            start: find(RESPONSE, b"zz99") as u64,
            length: 4,
        }],
        certificate: None,
        records,
        response_end: ResponseEnd::CloseNotify as i32,
        t_output_digest: Vec::new(),
    };
    let k_signed = k_signer.sign_k_output(&mut k, digest).expect("sign K");
    Bundle {
        k_output: Some(k_signed),
        t_output: Some(t_signed),
        attestations: Vec::new(),
        response_ciphertext: ciphertext,
        response_keystream: keystream,
    }
}

fn verify(proof: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("verify")
        .arg(proof)
        .args(extra)
        .output()
        .expect("run tessera verify")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn verify_accepts_honest_proofs_and_names_every_rejection() {
    let dir = std::env::temp_dir().join(format!("tessera-verify-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (k_signer, t_signer) = (Signer::generate(), Signer::generate());
    let (k_addr, t_addr) = (
        k_signer.address().to_string(),
        t_signer.address().to_string(),
    );
    let pins = [
        "--tee-k-signer",
        k_addr.as_str(),
        "--tee-t-signer",
        t_addr.as_str(),
    ];

    let honest = bundle(&k_signer, &t_signer, 0);
    let proof = dir.join("proof.json");
    std::fs::write(&proof, proof_file::to_json(&honest)).expect("write proof");

    // Text: what the proof shows, hidden bytes as '*', the proof range revealed.
    let out = verify(&proof, &[&pins[..], &["--nonce", "01020304"]].concat());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("VALID"), "{stdout}");
    assert!(stdout.contains("bank.test:8443"), "{stdout}");
    assert!(stdout.contains("TLS13_AES_128_GCM_SHA256"), "{stdout}");
    assert!(stdout.contains("Cookie: ******"), "{stdout}");
    assert!(stdout.contains("X-Account: 42"), "{stdout}");
    assert!(stdout.contains("\"token\":\"****\""), "{stdout}");
    assert!(
        !stdout.contains("s3cret") && !stdout.contains("zz99"),
        "{stdout}"
    );

    // JSON, with the signers pinned from a file.
    let signers = dir.join("signers.json");
    std::fs::write(
        &signers,
        format!(r#"{{"tee_k": "{k_addr}", "tee_t": "{t_addr}"}}"#),
    )
    .expect("write signers");
    let out = verify(
        &proof,
        &["--signers", signers.to_str().expect("utf-8 path"), "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["valid"], true);
    assert_eq!(json["port"], 8443);
    assert_eq!(json["proof_ranges"][0]["value"], "42");
    assert!(
        json["response"]
            .as_str()
            .expect("response")
            .ends_with("\"token\":\"****\"}")
    );

    let rejected = |proof: &Path, extra: &[&str], reason: &str| {
        let out = verify(proof, extra);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "accepted: {}", text(&out.stdout));
        assert!(stderr.contains(reason), "expected {reason:?} in: {stderr}");
        assert!(out.stdout.is_empty(), "a rejected proof prints no content");
    };

    // Pinned signers swapped: TEE_K's output is not signed by the key pinned for TEE_K.
    rejected(
        &proof,
        &["--tee-k-signer", &t_addr, "--tee-t-signer", &k_addr],
        "not by the pinned signer",
    );
    // Another verifier's nonce.
    rejected(
        &proof,
        &[&pins[..], &["--nonce", "ffff"]].concat(),
        "nonce mismatch",
    );
    // One ciphertext byte flipped inside T_OUTPUT's signed body.
    let mut tampered = honest.clone();
    if let Some(t) = tampered.t_output.as_mut() {
        let last = t.body.len() - 40;
        t.body[last] ^= 1;
    }
    let tampered_path = dir.join("tampered.json");
    std::fs::write(&tampered_path, proof_file::to_json(&tampered)).expect("write");
    rejected(&tampered_path, &pins, "proof rejected");
    // Older than --max-age.
    let stale_path = dir.join("stale.json");
    std::fs::write(
        &stale_path,
        proof_file::to_json(&bundle(&k_signer, &t_signer, 120_000)),
    )
    .expect("write");
    rejected(
        &stale_path,
        &[&pins[..], &["--max-age", "60"]].concat(),
        "too old",
    );
    // Not a proof file at all.
    let junk = dir.join("junk.json");
    std::fs::write(&junk, b"{\"format\": 3").expect("write");
    rejected(&junk, &pins, "not valid JSON");
    // No pins: refused by the command line itself.
    let out = verify(&proof, &[]);
    assert!(!out.status.success());

    std::fs::remove_dir_all(&dir).ok();
}
