//! What the chat command-line tests share: an invite-only relay served by the `tessera` binary, and
//! `tessera chat` run against it with a passphrase-sealed state.

#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

pub const PASSPHRASE: &str = "correct horse battery staple";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tessera")
}

pub struct Relay {
    pub child: Child,
    pub url: String,
    pub key: String,
    pub admin: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(data: &Path) -> Relay {
    let mut child = Command::new(bin())
        .args(["relay", "serve", "--listen", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0", "--invite-only", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    out.read_line(&mut banner).expect("banner");
    // "relay on ws://ADDR/ with key KEY"
    let words: Vec<&str> = banner.split_whitespace().collect();
    assert_eq!(words.len(), 6, "{banner}");
    let mut admin = String::new();
    out.read_line(&mut admin).expect("admin banner");
    let admin = admin.split_whitespace().nth(2).expect("admin url");
    Relay {
        url: words[2].to_owned(),
        key: words[5].to_owned(),
        admin: admin
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        child,
    }
}

pub fn chat(state: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("chat")
        .arg("--state")
        .arg(state)
        .args(args)
        .env("TESSERA_CHAT_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .output()
        .expect("tessera chat")
}

pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn invite(data: &Path) -> String {
    let out = Command::new(bin())
        .args(["relay", "invite", "--data"])
        .arg(data)
        .output()
        .expect("relay invite");
    ok(out).trim().to_owned()
}

/// `register` for `user` at `relay` with 5 prekeys, without a token (append `--invite TOKEN`).
pub fn register_args<'a>(relay: &'a Relay, user: &'a str) -> Vec<&'a str> {
    vec![
        "register",
        "--server",
        &relay.url,
        "--server-key",
        &relay.key,
        "--user",
        user,
        "--prekeys",
        "5",
    ]
}

pub fn register(relay: &Relay, state: &Path, user: &str, token: &str) -> String {
    let mut args = register_args(relay, user);
    args.extend(["--invite", token]);
    ok(chat(state, &args))
}

/// A relay client of the library on a channel to `relay` as `identity` (not registered yet).
pub async fn relay_client(
    relay: &Relay,
    identity: &tessera_channel::Identity,
) -> tessera_relay::client::RelayClient {
    use tessera_channel::{ChannelConfig, Connector, PublicKey};
    use tessera_session::{Registry, RegistryConfig};
    let connector = Connector::new(
        Registry::new(RegistryConfig::new("test")),
        ChannelConfig::default(),
    );
    let key: PublicKey = relay.key.parse().expect("relay key");
    let channel = connector
        .connect(&relay.url, key, identity)
        .await
        .expect("connect");
    tessera_relay::client::RelayClient::new(channel)
}

pub fn json_line(out: &mut BufReader<ChildStdout>) -> serde_json::Value {
    let mut line = String::new();
    out.read_line(&mut line).expect("listen output");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

pub fn device_of(register_output: &str) -> String {
    register_output
        .split_whitespace()
        .nth(3)
        .expect("device id")
        .to_owned()
}

/// A fresh directory for one test (`name` tells the tests of one binary apart).
pub fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-chat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}
