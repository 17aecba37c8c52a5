//! OpenSSL as the website: `openssl s_server -www` for one suite at a time (needs the `openssl` binary;
//! `.ci/run` installs it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tessera_tee::{CipherSuite, TlsVersion};

use super::TestPki;

pub const OPENSSL: &str = "openssl";

pub fn openssl_available() -> bool {
    let ok = Command::new(OPENSSL)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "\n!!!!!!!!!! SKIPPED: the `openssl` binary is missing; OpenSSL interop was NOT tested. \
             Install it with `apt-get install -y openssl`. !!!!!!!!!!\n"
        );
    }
    ok
}

/// True if this OpenSSL build offers `suite` in its version.
pub fn openssl_offers(suite: CipherSuite) -> bool {
    let mut cmd = Command::new(OPENSSL);
    cmd.args(["ciphers", "-s"]);
    match suite.version() {
        TlsVersion::Tls13 => cmd.args(["-tls1_3", "-ciphersuites", suite.openssl_name()]),
        TlsVersion::Tls12 => cmd.args(["-tls1_2", suite.openssl_name()]),
    };
    cmd.output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(suite.openssl_name())
    })
}

/// Writes the test site's certificate and key for `suite` into `dir`: (cert.pem, key.pem).
pub fn site_files(dir: &Path, pki: &TestPki, suite: CipherSuite) -> (PathBuf, PathBuf) {
    let leaf = pki.leaf_for(suite);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    (cert, key)
}

/// A free loopback port: bind :0, read it, release it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An `openssl s_server` child, killed on drop.
pub struct SServer {
    pub child: Child,
    pub port: u16,
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SServer {
    /// Starts `s_server -www` for exactly `suite`, and returns once it printed ACCEPT (it listens).
    pub fn start(dir: &Path, pki: &TestPki, suite: CipherSuite) -> SServer {
        let (cert, key) = site_files(dir, pki, suite);
        let port = free_port();
        let mut cmd = Command::new(OPENSSL);
        cmd.arg("s_server")
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args(["-www", "-naccept", "1", "-alpn", "http/1.1"]);
        match suite.version() {
            TlsVersion::Tls13 => cmd.args(["-tls1_3", "-ciphersuites", suite.openssl_name()]),
            TlsVersion::Tls12 => cmd.args(["-tls1_2", "-cipher", suite.openssl_name()]),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_server");
        let stdout = child.stdout.take().unwrap();
        let mut server = SServer { child, port };
        // Wait for the listening socket: s_server prints ACCEPT once it is bound (no sleeps).
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.trim() == "ACCEPT" => break,
                Some(Ok(_)) => continue,
                _ => {
                    let status = server.child.wait();
                    panic!("openssl s_server for {suite} ended before listening: {status:?}");
                }
            }
        }
        // Keep draining its stdout so it can never block on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        server
    }
}
