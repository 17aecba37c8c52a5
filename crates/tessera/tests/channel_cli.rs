//! `tessera keygen`, `tessera channel serve` and `tessera channel connect` driven as a user would, from the
//! command line: pinned key, known-hosts trust on first use, and a hard failure when the server key changes.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

fn keygen(path: &Path) -> String {
    let _ = std::fs::remove_file(path);
    let out = Command::new(bin())
        .args(["keygen", "--out"])
        .arg(path)
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = Command::new(bin())
        .args(["keygen", "--show"])
        .arg(path)
        .output()
        .expect("show");
    assert!(shown.status.success());
    String::from_utf8_lossy(&shown.stdout).trim().to_string()
}

/// Starts `tessera channel serve` on a free port; returns the child and its URL.
fn serve(key: &Path) -> (Child, String) {
    let mut child = Command::new(bin())
        .args(["channel", "serve", "--listen", "127.0.0.1:0", "--key"])
        .arg(key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("banner");
    let url = line.split_whitespace().nth(3).expect("url").to_string();
    (child, url)
}

fn connect(url: &str, key: &Path, trust: &[&str], stdin_lines: &str) -> Output {
    let mut child = Command::new(bin())
        .args(["channel", "connect", url, "--key"])
        .arg(key)
        .args(trust)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("connect");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin_lines.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

#[test]
fn connect_from_the_command_line_with_a_pin_and_with_known_hosts() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tessera-channel-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let server_key_file = dir.join("server.key");
    let client_key_file = dir.join("client.key");
    let server_key = keygen(&server_key_file);
    keygen(&client_key_file);
    assert_eq!(server_key.len(), 64, "{server_key}");

    let (server, url) = serve(&server_key_file);
    // Pinned key, messages from stdin, echoed back.
    let out = connect(
        &url,
        &client_key_file,
        &["--server-key", &server_key],
        "one\ntwo\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&server_key));
    assert!(String::from_utf8_lossy(&out.stderr).contains("protocol version 1"));
    // Protocol version 2 (AES-GCM), asked for by the client; the server speaks both.
    let out = connect(
        &url,
        &client_key_file,
        &[
            "--server-key",
            &server_key,
            "--suite",
            "aesgcm",
            "-m",
            "gcm",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "gcm\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("protocol version 2"));

    // Trust on first use records the key; a second connection checks it.
    let known = dir.join("known_hosts");
    let _ = std::fs::remove_file(&known);
    let known_arg = known.to_string_lossy().to_string();
    for _ in 0..2 {
        let out = connect(
            &url,
            &client_key_file,
            &["--known-hosts", &known_arg, "-m", "tofu"],
            "",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "tofu\n");
    }
    assert!(
        std::fs::read_to_string(&known)
            .expect("known_hosts")
            .contains(&server_key)
    );
    stop(server);

    // Same address, new server key: the known-hosts client refuses, loudly.
    let other_key_file = dir.join("other.key");
    keygen(&other_key_file);
    let (server, new_url) = serve(&other_key_file);
    let pinned = std::fs::read_to_string(&known).expect("known_hosts");
    let host = url.trim_start_matches("ws://").trim_end_matches('/');
    let new_host = new_url.trim_start_matches("ws://").trim_end_matches('/');
    std::fs::write(&known, pinned.replace(host, new_host)).expect("rewrite known_hosts");
    let out = connect(
        &new_url,
        &client_key_file,
        &["--known-hosts", &known_arg, "-m", "x"],
        "",
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing was sent to an impostor");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("key") && (err.contains("changed") || err.contains("mismatch")),
        "{err}"
    );
    stop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
