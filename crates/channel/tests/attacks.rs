//! Misbehaving peers over real WebSockets: replays, duplicates, stalls, garbage. Each must end in a close
//! with the documented code, and leave no session behind.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use rand::RngExt;
use tessera_channel::frame::{self, FrameKind};
use tessera_channel::handshake::client_hello;
use tessera_channel::{ChannelConfig, Identity, ServerTrust, close_code};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(10);

/// Runs an honest handshake over `ws`, returning the frames sent and the established state.
async fn honest(
    ws: &mut Raw,
    me: &Identity,
    server: &Identity,
) -> (Vec<u8>, Vec<u8>, tessera_channel::handshake::Established) {
    let trust = ServerTrust::Key(server.public_key());
    let (state, hello) = client_hello::start(me, trust, "x:1".into(), vec![]).expect("start");
    send_raw(ws, hello.clone()).await;
    let (state, auth) = state
        .handle(&next_raw(ws).await.expect("server_hello"))
        .expect("server_hello ok");
    send_raw(ws, auth.clone()).await;
    let est = state
        .handle(&next_raw(ws).await.expect("session_established"))
        .expect("established");
    (hello, auth, est)
}

#[tokio::test]
async fn client_auth_replayed_on_a_new_connection_is_refused() {
    let server = echo_server(ChannelConfig::default()).await;
    let me = Identity::generate();
    let mut first = raw(&server.url).await;
    let (hello, auth, _) = honest(&mut first, &me, &server.identity).await;
    // An eavesdropper replays the recorded client side on a new connection.
    let mut replay = raw(&server.url).await;
    send_raw(&mut replay, hello).await;
    let _server_hello = next_raw(&mut replay).await.expect("fresh server_hello");
    send_raw(&mut replay, auth).await;
    let (code, reason) = next_raw(&mut replay).await.expect_err("closed");
    assert_eq!(code, close_code::DECRYPT, "{reason}");
    assert!(reason.contains("client_auth"), "{reason}");
    drop(first);
    wait_empty(server.registry(), LIMIT).await;
}

#[tokio::test]
async fn client_auth_relayed_under_the_attackers_ephemeral_is_refused() {
    let server = echo_server(ChannelConfig::default()).await;
    let victim = Identity::generate();
    let attacker = Identity::generate();
    // The victim's handshake, up to its client_auth.
    let mut v = raw(&server.url).await;
    let (state, hello) = client_hello::start(
        &victim,
        server.identity.public_key().into(),
        "x".into(),
        vec![],
    )
    .expect("start");
    send_raw(&mut v, hello).await;
    let (_, victim_auth) = state
        .handle(&next_raw(&mut v).await.expect("sh"))
        .expect("ok");
    // The attacker's own connection, own ephemeral, then the victim's client_auth.
    let mut a = raw(&server.url).await;
    let (_, hello) = client_hello::start(
        &attacker,
        server.identity.public_key().into(),
        "x".into(),
        vec![],
    )
    .expect("start");
    send_raw(&mut a, hello).await;
    next_raw(&mut a).await.expect("sh");
    send_raw(&mut a, victim_auth).await;
    let (code, _) = next_raw(&mut a).await.expect_err("closed");
    assert_eq!(code, close_code::DECRYPT);
}

#[tokio::test]
async fn duplicate_client_hello_is_a_protocol_error() {
    let server = echo_server(ChannelConfig::default()).await;
    let me = Identity::generate();
    let mut ws = raw(&server.url).await;
    let (_, hello) =
        client_hello::start(&me, server.identity.public_key().into(), "x".into(), vec![])
            .expect("start");
    send_raw(&mut ws, hello.clone()).await;
    send_raw(&mut ws, hello).await;
    next_raw(&mut ws).await.expect("server_hello for the first");
    let (code, reason) = next_raw(&mut ws).await.expect_err("closed");
    assert_eq!(code, close_code::PROTOCOL);
    assert!(
        reason.contains("unexpected client_hello while expecting client_auth"),
        "{reason}"
    );
    wait_empty(server.registry(), LIMIT).await;
}

#[tokio::test]
async fn hello_after_the_handshake_is_a_protocol_error() {
    let server = echo_server(ChannelConfig::default()).await;
    let me = Identity::generate();
    let mut ws = raw(&server.url).await;
    let (hello, _, _) = honest(&mut ws, &me, &server.identity).await;
    send_raw(&mut ws, hello).await;
    let (code, reason) = next_raw(&mut ws).await.expect_err("closed");
    assert_eq!(code, close_code::PROTOCOL, "{reason}");
    wait_empty(server.registry(), LIMIT).await;
}

#[tokio::test]
async fn a_stalled_handshake_is_cut_at_the_timeout() {
    let timeout = Duration::from_millis(300);
    let server = echo_server(ChannelConfig {
        handshake_timeout: timeout,
        ..ChannelConfig::default()
    })
    .await;
    let me = Identity::generate();
    let started = Instant::now();
    let mut ws = raw(&server.url).await;
    let (_, hello) =
        client_hello::start(&me, server.identity.public_key().into(), "x".into(), vec![])
            .expect("start");
    send_raw(&mut ws, hello).await;
    next_raw(&mut ws).await.expect("server_hello");
    // ... and never send client_auth.
    let (code, reason) = next_raw(&mut ws).await.expect_err("cut");
    let waited = started.elapsed();
    assert_eq!(code, close_code::HANDSHAKE_TIMEOUT, "{reason}");
    assert!(waited >= timeout, "{waited:?}");
    assert!(waited < timeout * 10, "{waited:?}");
    wait_empty(server.registry(), LIMIT).await;

    // A silent connection (no client_hello at all) is cut too.
    let mut silent = raw(&server.url).await;
    let (code, _) = next_raw(&mut silent).await.expect_err("cut");
    assert_eq!(code, close_code::HANDSHAKE_TIMEOUT);
    wait_empty(server.registry(), LIMIT).await;
}

#[tokio::test]
async fn a_timely_handshake_is_never_killed_by_the_timer() {
    // Long enough for a debug-build handshake on a busy machine; the point is what happens after it.
    let timeout = Duration::from_secs(2);
    let server = echo_server(ChannelConfig {
        handshake_timeout: timeout,
        ..ChannelConfig::default()
    })
    .await;
    let mut channel = server.connect(&connector()).await.expect("connect");
    tokio::time::sleep(timeout * 2).await;
    channel.send(&b"still here"[..]).await.expect("send");
    assert_eq!(
        channel.recv().await.expect("recv").as_deref(),
        Some(&b"still here"[..])
    );
}

#[tokio::test]
async fn random_garbage_frames_close_with_a_reason() {
    let server = echo_server(ChannelConfig::default()).await;
    let mut rng = rand::rng();
    // Before the handshake: random bytes of random lengths, random kind bytes included.
    for i in 0..50 {
        let len = rng.random_range(0..300);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if i % 2 == 0 && !bytes.is_empty() {
            bytes[0] = (i % 5) as u8; // hit the real kinds too
        }
        let mut ws = raw(&server.url).await;
        send_raw(&mut ws, bytes).await;
        let (code, reason) = next_raw(&mut ws).await.expect_err("closed");
        // A random client_hello carries a random version: 4003 is the right answer to it.
        assert!(
            [
                close_code::PROTOCOL,
                close_code::DECRYPT,
                close_code::UNSUPPORTED_VERSION
            ]
            .contains(&code),
            "{code} {reason}"
        );
    }
    // After the handshake: garbage transport frames, a text message, an oversized message.
    let me = Identity::generate();
    for attempt in 0..3 {
        let mut ws = raw(&server.url).await;
        honest(&mut ws, &me, &server.identity).await;
        let expected = match attempt {
            0 => {
                let mut bytes: Vec<u8> = (0..100).map(|_| rng.random()).collect();
                bytes[0] = FrameKind::Transport as u8;
                send_raw(&mut ws, bytes).await;
                close_code::DECRYPT
            }
            1 => {
                ws.send(Message::Text("hello".into())).await.expect("send");
                close_code::PROTOCOL
            }
            _ => {
                let _ = ws
                    .send(Message::Binary(vec![4u8; frame::MAX_FRAME + 10].into()))
                    .await;
                close_code::TOO_LARGE
            }
        };
        let (code, reason) = next_raw(&mut ws).await.expect_err("closed");
        assert_eq!(code, expected, "attempt {attempt}: {reason}");
    }
    wait_empty(server.registry(), LIMIT).await;
}

#[tokio::test]
async fn a_replayed_transport_frame_is_refused() {
    let server = echo_server(ChannelConfig::default()).await;
    let me = Identity::generate();
    let mut ws = raw(&server.url).await;
    let (_, _, mut est) = honest(&mut ws, &me, &server.identity).await;
    let frame = est.seal(&[frame::TYPE_DATA, b'a']).expect("seal");
    send_raw(&mut ws, frame.clone()).await;
    let echoed = next_raw(&mut ws).await.expect("echo");
    let mut out = vec![0u8; echoed.len()];
    let n = est.open(&echoed, &mut out).expect("open");
    assert_eq!(&out[..n], &[frame::TYPE_DATA, b'a']);
    send_raw(&mut ws, frame).await;
    let (code, _) = next_raw(&mut ws).await.expect_err("closed");
    assert_eq!(code, close_code::DECRYPT);
    wait_empty(server.registry(), LIMIT).await;
}

#[tokio::test]
async fn a_stalled_server_is_cut_at_the_client_timeout() {
    // A WebSocket server that completes the upgrade and then says nothing.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    tokio::spawn(async move {
        let (stream, _) = tcp.accept().await.expect("accept");
        let ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("upgrade");
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(ws);
    });
    let timeout = Duration::from_millis(300);
    let connector = tessera_channel::Connector::new(
        registry("stalled-server-client"),
        ChannelConfig {
            handshake_timeout: timeout,
            ..ChannelConfig::default()
        },
    );
    let started = Instant::now();
    let err = connector
        .connect(
            &format!("ws://{addr}/"),
            Identity::generate().public_key(),
            &Identity::generate(),
        )
        .await
        .expect_err("must time out");
    assert!(
        matches!(err, tessera_channel::ChannelError::HandshakeTimeout(t) if t == timeout),
        "{err}"
    );
    assert!(started.elapsed() < timeout * 10, "{:?}", started.elapsed());
    wait_empty(connector.registry(), LIMIT).await;
}
