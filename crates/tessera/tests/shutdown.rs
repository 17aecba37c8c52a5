//! Graceful shutdown of a long-running command on SIGTERM and SIGINT: it stops accepting, lets an open
//! channel finish within the grace period, then exits cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera_channel::{ChannelConfig, Connector, Identity, PublicKey};
use tessera_session::{Registry, RegistryConfig};

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

async fn serve_then_signal(sig: &str) {
    let dir = std::env::temp_dir().join(format!("tessera-shutdown-{sig}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let key = dir.join("server.key");
    let _ = std::fs::remove_file(&key);
    let bin = env!("CARGO_BIN_EXE_tessera");
    let made = Command::new(bin)
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let mut server = Command::new(bin)
        .args([
            "channel",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grace",
            "3",
            "--key",
        ])
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    // "echo server on ws://ADDR/ with key KEY"
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server banner");
    let words: Vec<&str> = line.split_whitespace().collect();
    let url = words.get(3).expect("url in banner").to_string();
    let server_key: PublicKey = words.get(6).expect("key in banner").parse().expect("key");

    let registry = Registry::new(RegistryConfig::new("shutdown-test"));
    let connector = Connector::new(registry.clone(), ChannelConfig::default());
    let mut channel = connector
        .connect(&url, server_key, &Identity::generate())
        .await
        .expect("connect");
    channel
        .send(b"before the signal".to_vec())
        .await
        .expect("send");
    assert_eq!(
        channel.recv().await.expect("recv").as_deref(),
        Some(&b"before the signal"[..])
    );

    let signalled = Instant::now();
    signal(server.id(), sig);
    // The open channel is told the server is going away and ends; the process exits within the grace.
    let end = tokio::time::timeout(Duration::from_secs(10), channel.recv())
        .await
        .expect("the channel ended within the grace period");
    assert!(
        !matches!(end, Ok(Some(_))),
        "no more data after the signal: {end:?}"
    );
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{sig}: exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
    // A new connection is refused: nothing listens any more.
    assert!(
        connector
            .connect(&url, server_key, &Identity::generate())
            .await
            .is_err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_stops_the_channel_server_gracefully() {
    serve_then_signal("TERM").await;
}

#[tokio::test]
async fn sigint_stops_the_channel_server_gracefully() {
    serve_then_signal("INT").await;
}
