//! TEE_T's sessions end at once when the TEE_K link that announced them is lost, telling their client,
//! instead of idling until the idle limit. TEE_K is played by hand here, so the link can be cut while a
//! session waits for it.

use std::time::Duration;
use tessera_channel::{ChannelConfig, Connector, Identity};
use tessera_session::{Registry, RegistryConfig};
use tessera_tee::proto::{Body, RedactionStreams, SessionCreated};
use tessera_tee::service::{TeeT, TeeTConfig};
use tessera_tee::signing::Signer;
use tessera_tee::wire;

/// Well below the idle limit (30 s by default): an answer within this is not the idle timeout.
const PROMPTLY: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tee_k_link_ends_its_waiting_sessions_promptly() {
    let k_identity = Identity::generate();
    let t = TeeT::new(TeeTConfig::new(
        Identity::generate(),
        Signer::generate(),
        Some(k_identity.public_key()),
    ));
    let serving = t.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = serving.local_addr();
    let connector = Connector::new(
        Registry::new(RegistryConfig::new("fake-tee-k")),
        ChannelConfig::default(),
    );

    // TEE_K announces a session; TEE_T echoes it once registered.
    let sid = [0x5a; 16];
    let link = connector
        .connect(&format!("ws://{addr}/teek"), t.public_key(), &k_identity)
        .await
        .expect("link to TEE_T");
    let (mut k_rx, k_tx) = link.split();
    k_tx.send(wire::encode(&sid, Body::SessionCreated(SessionCreated {})))
        .await
        .expect("send");
    let echo = tokio::time::timeout(PROMPTLY, k_rx.recv())
        .await
        .expect("echo in time")
        .expect("recv")
        .expect("a message");
    assert!(matches!(
        wire::decode(echo, Some(&sid)),
        Ok((_, Body::SessionCreated(_)))
    ));

    // The client attaches and sends its streams; the session now waits for TEE_K's encrypted_request.
    let client = connector
        .connect(
            &format!("ws://{addr}/ws"),
            t.public_key(),
            &Identity::generate(),
        )
        .await
        .expect("client channel");
    let (mut c_rx, c_tx) = client.split();
    c_tx.send(wire::encode(
        &sid,
        Body::RedactionStreams(RedactionStreams::default()),
    ))
    .await
    .expect("send");

    // The link is lost: the session ends now, with the reason to its client.
    k_tx.close();
    drop((k_rx, k_tx));
    let answer = tokio::time::timeout(PROMPTLY, c_rx.recv())
        .await
        .expect("the session ended before the idle limit")
        .expect("recv")
        .expect("a message");
    // The client's message races the loss (nothing tells the test when TEE_T has taken it): attached
    // first, the client hears the session's end and why; attaching as the session ends, that it ended; after
    // it ended, that the session is unknown. Never silence until the idle limit (150 runs saw the first and
    // the last; before 2026-12-07 the second was silence).
    let said = match wire::decode(answer, Some(&sid)) {
        Ok((_, Body::Error(e))) => e.reason,
        other => panic!("expected an error, got {other:?}"),
    };
    assert!(
        [
            "link to TEE_K lost",
            "the session ended as this client attached",
            "unknown session"
        ]
        .iter()
        .any(|reason| said.contains(reason)),
        "{said}"
    );
    tokio::time::timeout(PROMPTLY, t.sessions().wait_empty())
        .await
        .expect("TEE_T's session ended");
    t.shutdown(Duration::from_millis(100)).await;
}
