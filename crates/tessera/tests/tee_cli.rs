//! `tessera tee-t`, `tessera tee-k`, `tessera prove` and `tessera verify` as real processes against a local
//! HTTPS site (rustls, a test CA that only TEE_K trusts via --ca): a hidden cookie, a proof header, one JSON
//! member revealed; the proof file verified with the pinned signers and nonce, and refused with another
//! nonce; TLS 1.3 and 1.2; /health and /metrics on the admin port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

/// A CA and a leaf for `localhost`; the site answers one JSON document per connection, then close_notify.
fn site(dir: &Path) -> SocketAddr {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca");
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("cert"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(20)));
                let conn = rustls::ServerConnection::new(config).expect("conn");
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let balance = if text.contains("\r\nCookie: session=s3cr3t\r\n") {
                    "1234.56"
                } else {
                    "0"
                };
                let body = format!("{{\"user\":\"alice\",\"balance\":\"{balance}\"}}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    addr
}

/// A running service and what it printed: `<name> on ws://ADDR/ws with key HEX signer 0x…`.
struct Service {
    child: Child,
    addr: String,
    key: String,
    signer: String,
    admin: Option<String>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str], admin: bool) -> Service {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("banner");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.len(), 8, "{line}");
    let addr = words[2]
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_string();
    let admin = admin.then(|| {
        let mut line = String::new();
        out.read_line(&mut line).expect("admin line");
        line.split_whitespace()
            .nth(2)
            .expect("admin url")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    });
    Service {
        child,
        addr,
        key: words[5].to_string(),
        signer: words[7].to_string(),
        admin,
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run")
}

fn http_get(addr: &str, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).expect("admin");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    tcp.read_to_string(&mut text).expect("read");
    text
}

#[test]
fn prove_and_verify_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("tessera-tee-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let site = site(&dir);
    let k_key_file = dir.join("tee-k.key");
    let keygen = run(&["keygen", "--out", k_key_file.to_str().expect("path")]);
    assert!(keygen.status.success());
    let shown = run(&["keygen", "--show", k_key_file.to_str().expect("path")]);
    let k_public = String::from_utf8_lossy(&shown.stdout).trim().to_string();

    let signing_key = dir.join("tee-t.signing");
    let tee_t = start(
        &[
            "tee-t",
            "--listen",
            "127.0.0.1:0",
            "--tee-k-key",
            &k_public,
            "--admin",
            "127.0.0.1:0",
            "--signing-key",
            signing_key.to_str().expect("path"),
        ],
        true,
    );
    assert_eq!(
        std::fs::read_to_string(&signing_key)
            .expect("signing key")
            .trim()
            .len(),
        64
    );
    let ca = dir.join("ca.pem");
    let tee_k = start(
        &[
            "tee-k",
            "--listen",
            "127.0.0.1:0",
            "--tee-t",
            &tee_t.addr,
            "--tee-t-key",
            &tee_t.key,
            "--key",
            k_key_file.to_str().expect("path"),
            "--ca",
            ca.to_str().expect("path"),
        ],
        false,
    );
    assert_eq!(tee_k.key, k_public);

    let url = format!("https://localhost:{}/balance?key=k-123&v=2", site.port());
    let connect_to = site.to_string();
    for tls in ["1.3", "1.2"] {
        let proof = dir.join(format!("proof-{tls}.json"));
        let proof_path = proof.to_str().expect("path");
        // TLS 1.2 takes the hidden cookie from a private --header-file (not argv), 1.3 from -H.
        let header_file = dir.join("headers");
        std::fs::write(&header_file, "# secret\nCookie: session=s3cr3t\n").expect("headers");
        std::fs::set_permissions(&header_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let cookie: [&str; 2] = if tls == "1.2" {
            ["--header-file", header_file.to_str().expect("path")]
        } else {
            ["-H", "Cookie: session=s3cr3t"]
        };
        let out = run(&[
            "prove",
            &url,
            cookie[0],
            cookie[1],
            "--hide-header",
            "Cookie",
            "-H",
            "X-Account: acct-42",
            "--proof-header",
            "X-Account",
            "--hide-param",
            "key",
            "--reveal-json",
            "$.user",
            "--nonce",
            "0a0b0c",
            "--tee-k",
            &tee_k.addr,
            "--tee-k-key",
            &tee_k.key,
            "--tee-t",
            &tee_t.addr,
            "--tee-t-key",
            &tee_t.key,
            "--connect-to",
            &connect_to,
            "--tls",
            tls,
            "-o",
            proof_path,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "prove {tls}: {stderr}");
        assert!(stdout.contains("\"balance\":\"1234.56\""), "{stdout}");
        assert!(stderr.contains("proof written to"), "{stderr}");

        let verified = run(&[
            "verify",
            proof_path,
            "--tee-k-signer",
            &tee_k.signer,
            "--tee-t-signer",
            &tee_t.signer,
            "--nonce",
            "0a0b0c",
        ]);
        let text = String::from_utf8_lossy(&verified.stdout);
        assert!(
            verified.status.success(),
            "verify {tls}: {}",
            String::from_utf8_lossy(&verified.stderr)
        );
        assert!(text.contains("VALID"), "{text}");
        assert!(text.contains("\"user\":\"alice\""), "{text}");
        assert!(
            !text.contains("1234.56"),
            "the balance must stay hidden: {text}"
        );
        assert!(
            !text.contains("s3cr3t"),
            "the cookie must stay hidden: {text}"
        );
        assert!(
            text.contains("acct-42"),
            "the proof header is revealed: {text}"
        );
        assert!(
            text.contains("?key=*****&v=2"),
            "the parameter is hidden: {text}"
        );

        let wrong_nonce = run(&[
            "verify",
            proof_path,
            "--tee-k-signer",
            &tee_k.signer,
            "--tee-t-signer",
            &tee_t.signer,
            "--nonce",
            "ff",
        ]);
        assert!(!wrong_nonce.status.success());
        assert!(String::from_utf8_lossy(&wrong_nonce.stderr).contains("nonce"));
    }

    // A prover pinning the wrong TEE_T key fails with the reason.
    let bad = run(&[
        "prove",
        &url,
        "--tee-k",
        &tee_k.addr,
        "--tee-k-key",
        &tee_k.key,
        "--tee-t",
        &tee_t.addr,
        "--tee-t-key",
        &tee_k.key,
        "--connect-to",
        &connect_to,
        "-o",
        dir.join("bad.json").to_str().expect("path"),
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("TEE_T"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let admin = tee_t.admin.clone().expect("admin");
    assert!(http_get(&admin, "/health").starts_with("HTTP/1.1 200"));
    let metrics = http_get(&admin, "/metrics");
    assert!(
        metrics.starts_with("HTTP/1.1 200") && metrics.contains("tee-t"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tessera_tee_proofs_signed_total{service=\"tee-t\"} 2"),
        "{metrics}"
    );
    drop(tee_k);
    drop(tee_t);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a service command that must fail at startup; kills it (and fails) if it is still running after
/// 30 s, i.e. if it started serving.
fn run_failing_service(args: &[&str]) -> String {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = std::time::Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_signing_key_file_open_to_others_oversized_or_malformed_is_refused() {
    let dir = std::env::temp_dir().join(format!("tessera-tee-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let key_hex = "11".repeat(32);
    let cases = [
        ("open.key", key_hex.clone(), 0o644, "chmod 600"),
        (
            "big.key",
            format!("{key_hex}\n{}", "#".repeat(8192)),
            0o600,
            "larger than",
        ),
        (
            "bad.key",
            format!("x{}", &key_hex[1..]),
            0o600,
            "not 64 hex digits",
        ),
    ];
    for (name, contents, mode, expected) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &contents).expect("key file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let stderr = run_failing_service(&[
            "tee-t",
            "--listen",
            "127.0.0.1:0",
            "--signing-key",
            path.to_str().expect("path"),
        ]);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(!stderr.contains("1111"), "{name}: the key leaks: {stderr}");
        assert!(!stderr.contains("position"), "{name}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
