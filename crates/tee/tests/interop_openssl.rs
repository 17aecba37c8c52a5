//! Interop with a TLS stack not written in Rust: OpenSSL `s_server -www`, for every suite and version it
//! offers. The handshake runs in rustls over the relayed TCP bytes; the request is encrypted through the split
//! path (OpenSSL accepting it proves the record, nonce, AAD and tag right), and OpenSSL's response is decrypted
//! through keystreams after TEE_T-style tag verification.
//!
//! Needs the `openssl` binary (`apt-get install -y openssl`); without it the test says so loudly and skips.

mod common;

use common::openssl::{OPENSSL, SServer, free_port, openssl_available, openssl_offers, site_files};
use common::{HOSTNAME, TestPki, get_request, split_exchange};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tessera_tee::{CipherSuite, ConnectRequest, HandshakeMessage, TlsVersion};

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tessera-tee-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn every_suite_openssl_offers_through_the_split_path() {
    if !openssl_available() {
        return;
    }
    let pki = TestPki::new();
    let mut tested = Vec::new();
    for suite in CipherSuite::ALL {
        if !openssl_offers(suite) {
            eprintln!("openssl does not offer {suite}; not tested against it");
            continue;
        }
        let dir = TempDir::new(&format!("openssl-{}", suite.openssl_name()));
        let server = SServer::start(&dir.0, &pki, suite);
        let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        let request = ConnectRequest::new(HOSTNAME).with_suite(suite);
        let exchange = split_exchange(stream, &request, &pki.roots(), &get_request("/"))
            .unwrap_or_else(|e| panic!("{suite}: {e}"));
        drop(server);

        assert_eq!(exchange.suite, suite);
        assert_eq!(
            exchange.alpn.as_deref(),
            Some(&b"http/1.1"[..]),
            "{suite}: ALPN"
        );
        assert_eq!(exchange.certificates[0].dns_names, [HOSTNAME]);
        let page = String::from_utf8_lossy(&exchange.response);
        // OpenSSL parsed our split-encrypted GET (else no 200 page) and reports the suite it used.
        assert!(
            page.starts_with("HTTP/1.0 200 ok\r\n"),
            "{suite}: {page:.200}"
        );
        assert!(
            page.contains(&format!("Cipher is {}", suite.openssl_name())),
            "{suite}: {page}"
        );
        assert!(
            page.trim_end().ends_with("</HTML>"),
            "{suite}: the whole page arrived"
        );
        if suite.version() == TlsVersion::Tls13 {
            // OpenSSL sends two NewSessionTickets in two records: skipped, never part of the response.
            let tickets = exchange
                .post_handshake
                .iter()
                .filter(|m| **m == HandshakeMessage::NewSessionTicket)
                .count();
            assert!(tickets >= 1, "{suite}: tickets seen {tickets}");
            assert!(!page.contains('\u{4}'), "{suite}");
        }
        tested.push(suite);
    }
    eprintln!(
        "OpenSSL interop tested for {} suites: {tested:?}",
        tested.len()
    );
    // Debian's OpenSSL 3 offers all nine; at the very least the mandatory TLS 1.3 and 1.2 GCM suites.
    assert!(tested.contains(&CipherSuite::Tls13Aes128GcmSha256));
    assert!(tested.contains(&CipherSuite::Tls12EcdheEcdsaAes128GcmSha256));
}

/// An interactive `s_server` (no `-www`): stdin lines go to the client as application data, `K` sends a
/// KeyUpdate that requests ours; what the client sends appears on stdout. One command at a time: s_server reads
/// stdin in chunks and takes `K` only as a whole chunk.
struct Interactive {
    server: SServer,
    stdin: std::process::ChildStdin,
    stdout: std::sync::mpsc::Receiver<String>,
}

impl Interactive {
    fn start(dir: &Path, pki: &TestPki, suite: CipherSuite) -> Interactive {
        let (cert, key) = site_files(dir, pki, suite);
        let port = free_port();
        let mut child = Command::new(OPENSSL)
            .arg("s_server")
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args([
                "-naccept",
                "1",
                "-tls1_3",
                "-ciphersuites",
                suite.openssl_name(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openssl s_server");
        let stdin = child.stdin.take().unwrap();
        let (tx, stdout) = std::sync::mpsc::channel();
        // Both streams into one channel: received data and status lines are read alike.
        let forward = |pipe: Box<dyn std::io::Read + Send>, tx: std::sync::mpsc::Sender<String>| {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        };
        forward(Box::new(child.stdout.take().unwrap()), tx.clone());
        forward(Box::new(child.stderr.take().unwrap()), tx);
        let interactive = Interactive {
            server: SServer { child, port },
            stdin,
            stdout,
        };
        interactive.wait_for_line("ACCEPT");
        interactive
    }

    /// Blocks until s_server prints a line containing `needle` (a generous guard against hangs, no sleeps).
    fn wait_for_line(&self, needle: &str) {
        loop {
            match self.stdout.recv_timeout(std::time::Duration::from_secs(60)) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => continue,
                Err(e) => panic!("s_server never printed {needle:?}: {e}"),
            }
        }
    }

    fn command(&mut self, line: &str) {
        use std::io::Write;
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }
}

/// TLS 1.3 KeyUpdate with OpenSSL: `s_server` updates its keys and requests ours; the split reader follows and
/// the split writer answers with its own KeyUpdate and writes under the next generation, which OpenSSL reads.
#[test]
fn key_update_both_ways_against_openssl() {
    use std::io::{Read, Write};
    use tessera_tee::record::ContentType;
    use tessera_tee::{RecordContent, open_via_split, seal_key_update_via_split, seal_via_split};

    if !openssl_available() {
        return;
    }
    let pki = TestPki::new();
    for suite in CipherSuite::ALL
        .into_iter()
        .filter(|s| s.version() == TlsVersion::Tls13)
    {
        if !openssl_offers(suite) {
            continue;
        }
        let dir = TempDir::new(&format!("openssl-ku-{}", suite.openssl_name()));
        let mut server = Interactive::start(&dir.0, &pki, suite);
        let mut stream = TcpStream::connect(("127.0.0.1", server.server.port)).unwrap();
        let request = ConnectRequest::new(HOSTNAME).with_suite(suite);
        let mut session = common::handshake(&mut stream, &request, &pki.roots()).unwrap();

        let hello = seal_via_split(
            &mut session.writer,
            ContentType::ApplicationData,
            b"hello-from-split\n",
        );
        stream.write_all(&hello.unwrap().to_bytes()).unwrap();
        server.wait_for_line("hello-from-split"); // OpenSSL decrypted our first record
        server.command("K\n");

        // Read until the KeyUpdate arrives (that is also when s_server is ready for the next stdin line, which
        // it must not read in the same chunk as "K"), then until the line sent under the new keys arrives.
        let mut response = Vec::new();
        let mut update_requested = false;
        let mut sent_after = false;
        let mut buf = vec![0u8; 32 * 1024];
        let mut records = std::mem::take(&mut session.pending_records);
        while !response.ends_with(b"after-update\n") {
            for record in records.drain(..) {
                match open_via_split(&mut session.reader, &record).unwrap() {
                    RecordContent::ApplicationData(data) => response.extend(data),
                    RecordContent::Handshake(messages) => {
                        update_requested |= messages.contains(&HandshakeMessage::KeyUpdate {
                            update_requested: true,
                        });
                    }
                    RecordContent::Alert(alert) => panic!("{suite}: unexpected {alert:?}"),
                }
            }
            if update_requested && !sent_after {
                server.command("after-update\n");
                sent_after = true;
            }
            if !response.ends_with(b"after-update\n") {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "{suite}: EOF");
                records = session.splitter.push(&buf[..n]).unwrap();
            }
        }
        assert!(update_requested, "{suite}: OpenSSL requested our KeyUpdate");
        assert_eq!(response, b"after-update\n", "{suite}");

        let update = seal_key_update_via_split(&mut session.writer, false).unwrap();
        let reply = seal_via_split(
            &mut session.writer,
            ContentType::ApplicationData,
            b"reply-after-update\n",
        );
        stream
            .write_all(&[update.to_bytes(), reply.unwrap().to_bytes()].concat())
            .unwrap();
        server.wait_for_line("reply-after-update"); // OpenSSL decrypted our next generation
        drop(server);
    }
}
