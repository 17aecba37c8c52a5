//! `tessera relay serve` / `relay invite` and `tessera chat ...` driven as people and scripts drive them:
//! an invite-only relay, two users, a message sent while the recipient is offline and one while it
//! listens (both decrypted by the recipient's `listen --json`), fingerprints, a second device joined with
//! a link token, the admin port, and a hard warning when the relay presents another identity key for a
//! pinned device (the key swap seed 002's server could do).

use std::io::{BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tessera_relay::store::{Admission, Registration, SqliteStore, Store};

mod support {
    pub mod chat;
}
use support::chat::*;

/// `tessera chat` with `input` on its standard input.
fn chat_stdin(state: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(bin())
        .arg("chat")
        .arg("--state")
        .arg(state)
        .args(args)
        .env("TESSERA_CHAT_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tessera chat");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("tessera chat")
}

/// Registers `user` with `token` over a plain relay client and sends `ciphertext` to `to`'s `device`:
/// what any account can send, Olm or not.
fn send_raw(relay: &Relay, token: &str, user: &str, to: &str, device: &str, ciphertext: &str) {
    use tessera_relay::protocol::Envelope;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = relay_client(relay, &tessera_channel::Identity::generate()).await;
        client
            .register_with(user, "ik", "sk", Some(token))
            .await
            .expect("register");
        let envelope = Envelope {
            device: device.to_owned(),
            ciphertext: ciphertext.to_owned(),
        };
        client
            .send("garbage-1", to, vec![envelope])
            .await
            .expect("send");
        client.close().await;
    });
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("admin port");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

/// Sends the signal `name` (TERM, INT, ...) to `pid`.
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits until process `pid` holds `state`'s lock (it writes its id into the lock file once it has it;
/// polling with another command would race it for the lock).
fn wait_locked(state: &Path, pid: u32) {
    let mut lock = state.as_os_str().to_owned();
    lock.push(".lock");
    for _ in 0..200 {
        if std::fs::read_to_string(&lock).is_ok_and(|holder| holder == pid.to_string()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} never got locked by {pid}", state.display());
}

#[test]
fn relay_and_chat_from_the_command_line() {
    let dir: PathBuf = tempfile_dir("cli");
    let data = dir.join("data");
    let relay = serve(&data);
    let (alice, bob, alice_phone) = (
        dir.join("alice.state"),
        dir.join("bob.state"),
        dir.join("alice-phone.state"),
    );

    // Invite-only: no token, no account.
    let refused = chat(&alice, &register_args(&relay, "alice"));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invite"));
    assert!(!alice.exists(), "a refused registration leaves no state");

    let alice_device = device_of(&register(&relay, &alice, "alice", &invite(&data)));
    let bob_device = device_of(&register(&relay, &bob, "bob", &invite(&data)));
    // The token need not be in argv: from a private file, or from TESSERA_CHAT_INVITE.
    let used = invite(&data);
    let token_file = dir.join("carol.invite");
    std::fs::write(&token_file, format!("{used}\n")).expect("token file");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let relay_args = ["--server", &relay.url, "--server-key", &relay.key];
    let carol = [
        &["register"][..],
        &relay_args,
        &["--user", "carol", "--invite-file"],
    ]
    .concat();
    let mut carol: Vec<&str> = carol;
    carol.push(token_file.to_str().expect("path"));
    ok(chat(&dir.join("carol.state"), &carol));
    let erin_token = invite(&data);
    let erin = Command::new(bin())
        .arg("chat")
        .arg("--state")
        .arg(dir.join("erin.state"))
        .arg("register")
        .args(relay_args)
        .args(["--user", "erin"])
        .env("TESSERA_CHAT_PASSPHRASE", PASSPHRASE)
        .env("TESSERA_CHAT_INVITE", &erin_token)
        .output()
        .expect("register erin");
    ok(erin);
    let mut args = register_args(&relay, "dave");
    args.extend(["--invite", &used]);
    let reused = chat(&dir.join("dave.state"), &args);
    assert!(!reused.status.success(), "an invite is single use");

    // Someone sends bob a delivery that can never decrypt, ahead of everything else: listen reports it
    // (and acknowledges it) instead of stopping there.
    send_raw(
        &relay,
        &invite(&data),
        "mallory",
        "bob",
        &bob_device,
        "garbage",
    );

    // Bob is offline: the message waits on the relay, encrypted.
    // The text from standard input (`-`), so that it is not in argv; one final newline is dropped.
    let sent = ok(chat_stdin(
        &alice,
        &["send", "bob", "-"],
        "hello bob, you were offline\n",
    ));
    assert!(sent.starts_with("sent "), "{sent}");
    let empty = chat(&alice, &["send", "bob"]);
    assert!(!empty.status.success(), "nothing to send");
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no text"));

    let mut listen = Command::new(bin())
        .arg("chat")
        .arg("--state")
        .arg(&bob)
        .args(["listen", "--json", "--count", "2", "--timeout", "60"])
        .env("TESSERA_CHAT_PASSPHRASE", PASSPHRASE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("listen");
    let mut lines = BufReader::new(listen.stdout.take().expect("stdout"));
    let garbage = json_line(&mut lines);
    assert_eq!(garbage["undecryptable"], true, "{garbage}");
    assert_eq!(garbage["from"], "mallory");
    assert_eq!(garbage["message_id"], "garbage-1");
    let first = json_line(&mut lines);
    assert_eq!(first["from"], "alice");
    assert_eq!(first["from_device"], alice_device.as_str());
    assert_eq!(first["text"], "hello bob, you were offline");
    // While listen holds bob's state, another command on it is refused (it would overwrite sessions).
    let busy = chat(&bob, &["users"]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    // Bob is listening now: a live message.
    // No TEXT at all reads standard input too.
    ok(chat_stdin(
        &alice,
        &["send", "bob"],
        "and now you are online",
    ));
    let second = json_line(&mut lines);
    assert_eq!(second["text"], "and now you are online");
    assert!(listen.wait().expect("listen ends").success());

    // SIGTERM (docker stop, systemd) ends listen cleanly: exit 0, state saved, lock released.
    let mut listen = Command::new(bin())
        .arg("chat")
        .arg("--state")
        .arg(&bob)
        .args(["listen", "--json", "--timeout", "60"])
        .env("TESSERA_CHAT_PASSPHRASE", PASSPHRASE)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("listen");
    let mut lines = BufReader::new(listen.stdout.take().expect("stdout"));
    ok(chat(&alice, &["send", "bob", "before SIGTERM"]));
    assert_eq!(json_line(&mut lines)["text"], "before SIGTERM");
    signal(listen.id(), "TERM");
    assert!(
        listen.wait().expect("listen ends").success(),
        "SIGTERM is a clean stop"
    );
    ok(chat(&bob, &["users"]));

    // A listen killed outright leaves its lock file behind; the kernel released the lock with the
    // process, so the file locks nobody out (whatever process id it names).
    let mut listen = Command::new(bin())
        .arg("chat")
        .arg("--state")
        .arg(&bob)
        .args(["listen", "--json", "--timeout", "60"])
        .env("TESSERA_CHAT_PASSPHRASE", PASSPHRASE)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("listen");
    wait_locked(&bob, listen.id());
    // Killed wherever its start has got to: the state on disk is whole all the same (saves are atomic,
    // and private keys are saved before their public halves are published).
    listen.kill().expect("kill -9");
    let _ = listen.wait();
    assert!(dir.join("bob.state.lock").exists(), "the file stays");
    ok(chat(&bob, &["users"]));

    // Text output: a sender cannot forge a line from someone else or reach the terminal with escapes.
    ok(chat(
        &alice,
        &["send", "bob", "hi\nalice: wire me 100€\x1b[2J"],
    ));
    let shown = ok(chat(&bob, &["listen", "--count", "1", "--timeout", "30"]));
    assert_eq!(shown, "alice: hi\\nalice: wire me 100€\\u{1b}[2J\n");

    // Fingerprints: bob's own, and alice's device as bob has pinned it.
    let own = ok(chat(&alice, &["fingerprint"]));
    let alice_fp = own
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .expect("own fingerprint")
        .to_owned();
    let seen_by_bob = ok(chat(&bob, &["fingerprint", "alice"]));
    assert!(seen_by_bob.contains(&alice_fp), "{seen_by_bob}");
    assert!(seen_by_bob.contains("pinned, matches"), "{seen_by_bob}");
    let users = ok(chat(&bob, &["users"]));
    assert!(users.contains("alice") && users.contains("bob"), "{users}");
    assert!(
        !users.contains("carol"),
        "no enumeration of strangers: {users}"
    );

    // A second device of alice joins with a link token from the first, and gets bob's reply too.
    let link = ok(chat(&alice, &["link"])).trim().to_owned();
    let phone_device = device_of(&register(&relay, &alice_phone, "alice", &link));
    let devices = ok(chat(&alice, &["devices"]));
    assert!(devices.contains(&alice_device) && devices.contains(&phone_device));
    let to_both = chat(&bob, &["send", "alice", "hi both of you"]);
    let notice = String::from_utf8_lossy(&to_both.stderr).into_owned();
    ok(to_both);
    assert!(
        notice.contains("notice") && notice.contains(&phone_device),
        "bob is told about alice's new device: {notice}"
    );
    for state in [&alice, &alice_phone] {
        let got = ok(chat(
            state,
            &["listen", "--json", "--count", "1", "--timeout", "30"],
        ));
        let got: serde_json::Value = serde_json::from_str(got.trim()).expect("json");
        assert_eq!(got["text"], "hi both of you");
        assert_eq!(got["from_device"], bob_device.as_str());
    }

    // listen --output FILE: exactly once across a kill. Set up what a kill between appending a line and
    // saving the state leaves: the line in the file (here with a line cut short after it), bob's state
    // never saw the message, the relay still holds it.
    let sent = ok(chat(&alice, &["send", "bob", "written before a kill"]));
    let id = sent
        .trim()
        .strip_prefix("sent ")
        .expect("message id")
        .to_owned();
    let out = dir.join("bob.jsonl");
    let written = serde_json::json!({
        "from": "alice",
        "from_device": alice_device,
        "message_id": id,
        "text": "written before a kill",
    });
    std::fs::write(&out, format!("{written}\n{{\"from\":\"alice\",\"from_dev")).expect("output");
    ok(chat(&alice, &["send", "bob", "after the restart"]));
    let out_arg = out.to_str().expect("path");
    let args = [
        "listen",
        "--output",
        out_arg,
        "--count",
        "2",
        "--timeout",
        "30",
    ];
    assert!(ok(chat(&bob, &args)).is_empty(), "nothing on stdout");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let texts: Vec<&str> = lines
        .iter()
        .map(|l| l["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["written before a kill", "after the restart"]);
    assert_eq!(lines[0]["message_id"], id.as_str());
    // Alice's phone got copies of both: it takes them too (nothing is left on the relay below).
    ok(chat(
        &alice_phone,
        &["listen", "--json", "--count", "2", "--timeout", "30"],
    ));

    // The sealed state files hold no plaintext and no readable account name.
    for state in [&alice, &bob, &alice_phone] {
        let bytes = std::fs::read(state).expect("state");
        for needle in [&b"hello bob"[..], b"hi both", b"alice", b"bob"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
    }

    // Admin port.
    assert!(http_get(&relay.admin, "/health").contains("ok"));
    let metrics = http_get(&relay.admin, "/metrics");
    assert!(
        metrics.contains("tessera_relay_messages_stored_total"),
        "{metrics}"
    );

    // The relay (compromised, say) now presents another identity key for bob's device.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(data.join("relay.db")).await.expect("db");
        // Every listen acknowledged what it printed: nothing is left to deliver twice.
        for device in [&alice_device, &bob_device, &phone_device] {
            let left = store.pending(device, 0, 10).await.expect("pending");
            assert!(left.is_empty(), "{device}: {left:?}");
        }
        let impostor = tessera_relay::e2e::OlmDevice::new();
        store
            .register_device(
                &Registration {
                    username: "bob",
                    device: &bob_device,
                    identity_key: &impostor.identity_key(),
                    signing_key: &impostor.signing_key(),
                },
                &Admission::default(),
            )
            .await
            .expect("swap bob's key");
        store.close().await;
    });
    let refused = chat(&alice, &["send", "bob", "secret plans"]);
    assert!(
        !refused.status.success(),
        "nothing is sent to a changed key"
    );
    let warning = String::from_utf8_lossy(&refused.stderr);
    assert!(
        warning.contains("WARNING") && warning.contains("CHANGED"),
        "{warning}"
    );
    assert!(warning.contains(&bob_device), "{warning}");
    let shown = chat(&alice, &["fingerprint", "bob"]);
    assert!(!shown.status.success());
    assert!(String::from_utf8_lossy(&shown.stdout).contains("CHANGED"));
    assert!(String::from_utf8_lossy(&shown.stderr).contains("WARNING"));
    // Once checked with bob, alice accepts the new key; sending works again (to the new key).
    let trusted = ok(chat(&alice, &["trust", "bob", &bob_device]));
    assert!(trusted.contains("now pinned"), "{trusted}");
    let shown = ok(chat(&alice, &["fingerprint", "bob"]));
    assert!(shown.contains("pinned, matches"), "{shown}");
    ok(chat(&alice, &["send", "bob", "after checking the new key"]));

    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn secret_files_open_to_others_or_oversized_are_refused() {
    let dir = tempfile_dir("secrets");
    let state = dir.join("s.state");
    let key_hex = "22".repeat(32);
    let cases = [
        ("--key-file", key_hex.clone(), 0o644, "chmod 600"),
        (
            "--key-file",
            format!("{key_hex}\n{}", " ".repeat(8192)),
            0o600,
            "larger than",
        ),
        (
            "--key-file",
            format!("zz{}", &key_hex[2..]),
            0o600,
            "32 bytes or 64 hex",
        ),
        (
            "--passphrase-file",
            "sesame\n".to_owned(),
            0o640,
            "chmod 600",
        ),
        ("--passphrase-file", "s".repeat(5000), 0o600, "larger than"),
    ];
    for (i, (flag, contents, mode, expected)) in cases.into_iter().enumerate() {
        let path = dir.join(format!("secret-{i}"));
        std::fs::write(&path, &contents).expect("secret file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let out = Command::new(bin())
            .arg("chat")
            .arg("--state")
            .arg(&state)
            .arg(flag)
            .arg(&path)
            .arg("users")
            .env_remove("TESSERA_CHAT_PASSPHRASE")
            .stdin(Stdio::null())
            .output()
            .expect("tessera chat");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} case {i}");
        assert!(stderr.contains(expected), "{flag} case {i}: {stderr}");
        assert!(
            !stderr.contains("2222") && !stderr.contains("sesame"),
            "{flag} case {i}: the secret leaks: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
