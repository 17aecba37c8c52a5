//! The demo runs end to end on loopback and reports what each side saw.

#[tokio::test]
async fn demo_shows_offline_delivery_and_a_reply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = tessera_relay::demo::run(dir.path()).await.expect("demo");
    let all = lines.join("\n");
    assert!(
        all.contains("bob <- alice: \"hello bob, you are offline\""),
        "{all}"
    );
    assert!(
        all.contains("bob <- alice: \"this waits for you, encrypted\""),
        "{all}"
    );
    assert!(all.contains("alice <- bob: \"got both, thanks\""), "{all}");
    assert!(all.contains("0 message(s) left queued"), "{all}");
}
