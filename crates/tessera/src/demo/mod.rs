//! `tessera demo`: a tour of every working system, on loopback only, with real peers on both sides.
//!
//! Each part starts real servers on 127.0.0.1 (port 0), drives them as a client would, prints what happened,
//! and checks that every session it opened has ended — the session runtime's promise, shown on each system.

mod channel;
mod mcp;
mod tee;

use std::time::Instant;

/// Runs every part in turn; stops at the first failure with its error.
pub async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    println!("Tessera demo — every system on loopback\n");
    section("channel: Noise XX over WebSocket (client_hello / server_hello / client_auth)");
    channel::run().await?;
    section(
        "tee: an attested HTTPS transcript (TEE_K and TEE_T split the TLS AEAD), verified offline",
    );
    tee::run().await?;
    section("mcp: the Streamable HTTP proxy, both protocol generations, recorded to a tape");
    mcp::run().await?;
    section(
        "relay: end-to-end encrypted messages (Olm) through a relay that stores only ciphertext",
    );
    let dir = work_dir("relay")?;
    let lines = tessera_relay::demo::run(dir.path()).await;
    drop(dir);
    for line in lines? {
        println!("  {line}");
    }
    println!(
        "\nAll parts passed in {:.2} s. Every session opened by the demo has ended.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A fresh directory for one part's files: a random name (nobody can prepare it in advance), readable by
/// this user only, removed when dropped.
pub(crate) fn work_dir(part: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("tessera-demo-{part}-"))
        .tempdir()
}

fn section(title: &str) {
    println!("== {title}");
}

/// Lowercase hex of a byte string, shortened for display.
pub(crate) fn short_hex(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if hex.len() > 16 {
        format!("{}…", &hex[..16])
    } else {
        hex
    }
}
