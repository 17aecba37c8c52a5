//! `tessera demo` runs every working system end to end on loopback and exits 0.

use std::process::Command;

#[test]
fn the_demo_tours_every_system_and_leaves_no_session_behind() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("demo")
        .output()
        .expect("run tessera demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for expected in [
        "handshake done: server proved key",
        "sent and received back, decrypted: \"hello over Noise XX\"",
        "a client pinning the wrong server key is refused",
        "sessions left: server 0, client 0",
        "TLS13_CHACHA20_POLY1305_SHA256: proved in",
        "on new channels; proof file of",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: proved in",
        "on the same channels; proof file of",
        "verified against the pinned signers",
        "Cookie: ****",
        "\\\"balance\\\":\\\"1234.56\\\"",
        "the same proof with another verifier nonce: refused",
        "sessions left: TEE_K and TEE_T together 0",
        "2025-11-25: tools/call echo -> \"echo: hello through the proxy\"",
        "DELETE ends the session; the next request gets HTTP 404",
        "2026-07-28: tools/call echo (Mcp-Name: echo) -> \"echo: stateless\"",
        "HTTP 400, error -32020, stopped at the proxy",
        "sessions left: 0",
        "(decrypted, acknowledged)",
        "0 message(s) left queued",
        "All parts passed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
