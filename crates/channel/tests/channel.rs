//! End-to-end behaviour over real loopback WebSockets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tessera_channel::{
    Admission, AllowList, AnyKey, ChannelConfig, ChannelError, Identity, KnownHosts, ServerTrust,
    close_code,
};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn handshake_succeeds_and_echoes() {
    let (server, mut listener) = start_with(
        |req: &tessera_channel::AdmissionRequest<'_>| Admission::Accept {
            welcome: [b"hello ".as_slice(), req.auth_payload].concat(),
        },
        ChannelConfig::default(),
    )
    .await;
    let client_id = Identity::generate();
    let connector = connector();
    let accept = tokio::spawn(async move { listener.accept().await.expect("accepted") });
    let mut client = connector
        .connect_with_auth(
            &server.url,
            server.identity.public_key(),
            &client_id,
            b"alice".to_vec(),
        )
        .await
        .expect("connect");
    let mut accepted = accept.await.expect("join");

    // Both sides know each other's proven identity and share the channel binding.
    assert_eq!(client.peer(), server.identity.public_key());
    assert_eq!(accepted.peer(), client_id.public_key());
    assert_eq!(client.channel_binding(), accepted.channel_binding());
    assert_eq!(client.info().peer_payload, b"hello alice");
    assert_eq!(accepted.info().peer_payload, b"alice");
    assert_eq!(client.session_id(), accepted.session().id());
    assert!(client.info().expires_at > 0);
    assert_eq!(server.registry().len(), 1);
    assert!(accepted.session().state().to_string().contains("active"));

    client.send(&b"ping"[..]).await.expect("send");
    assert_eq!(
        accepted.recv().await.expect("recv").as_deref(),
        Some(&b"ping"[..])
    );
    // A message larger than one Noise message is fragmented and reassembled.
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    accepted.send(big.clone()).await.expect("send big");
    assert_eq!(
        client.recv().await.expect("recv").as_deref(),
        Some(&big[..])
    );
    // Every length around the fragment boundaries, each after one of another length, arrives whole.
    let f = tessera_channel::frame::MAX_FRAGMENT;
    for (i, len) in [
        f - 1,
        f,
        f + 1,
        3 * f,
        1,
        2 * f + 1,
        2 * f,
        5,
        1 << 20,
        2 * f - 1,
    ]
    .into_iter()
    .enumerate()
    {
        let message: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        accepted.send(message.clone()).await.expect("send");
        let got = client.recv().await.expect("recv").expect("a message");
        assert!(got == message[..], "length {len}: got {} bytes", got.len());
    }
    // Empty messages are messages too.
    client.send(Vec::new()).await.expect("send empty");
    assert_eq!(
        accepted.recv().await.expect("recv").as_deref(),
        Some(&[][..])
    );

    client.close().await;
    assert_eq!(accepted.recv().await.expect("normal close"), None);
    drop(accepted);
    wait_empty(server.registry(), LIMIT).await;
    wait_empty(connector.registry(), LIMIT).await;
}

#[tokio::test]
async fn halves_work_from_different_tasks() {
    let server = echo_server(ChannelConfig::default()).await;
    let channel = server.connect(&connector()).await.expect("connect");
    let (mut reader, writer) = channel.split();
    let writers: Vec<_> = (0..4u8)
        .map(|w| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for i in 0..50u8 {
                    writer.send(vec![w, i]).await.expect("send");
                }
            })
        })
        .collect();
    let mut seen = [0u8; 4];
    for _ in 0..200 {
        let m = reader.recv().await.expect("recv").expect("open");
        // Per writer, order is preserved.
        assert_eq!(m[1], seen[m[0] as usize]);
        seen[m[0] as usize] += 1;
    }
    for w in writers {
        w.await.expect("join");
    }
    assert_eq!(seen, [50; 4]);
}

#[tokio::test]
async fn wrong_pinned_key_is_rejected() {
    let server = echo_server(ChannelConfig::default()).await;
    let connector = connector();
    let wrong = Identity::generate().public_key();
    let err = connector
        .connect(&server.url, wrong, &Identity::generate())
        .await
        .expect_err("must fail");
    assert!(
        matches!(err, ChannelError::ServerKeyMismatch { presented, .. } if presented == server.identity.public_key()),
        "{err}"
    );
    wait_empty(server.registry(), LIMIT).await;
    wait_empty(connector.registry(), LIMIT).await;
}

#[tokio::test]
async fn known_hosts_trusts_first_use_and_fails_hard_on_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = Arc::new(KnownHosts::new(dir.path().join("known_hosts")));
    let trust = ServerTrust::KnownHosts(hosts.clone());
    let me = Identity::generate();
    let first = echo_server(ChannelConfig::default()).await;
    let addr = first.serving.local_addr();
    let c = connector();
    c.connect(&first.url, trust.clone(), &me)
        .await
        .expect("first use")
        .close()
        .await;
    c.connect(&first.url, trust.clone(), &me)
        .await
        .expect("known")
        .close()
        .await;
    assert_eq!(
        hosts.get(&addr.to_string()).expect("read"),
        Some(first.identity.public_key())
    );
    // Another server (another key) on the same address.
    first.serving.shutdown(Duration::from_secs(1)).await;
    let identity = Identity::generate();
    let (server, listener) = tessera_channel::Server::new(
        identity,
        AnyKey,
        ChannelConfig::default(),
        registry("impostor"),
    );
    let _serving = tessera_channel::serve(addr, &server).await.expect("rebind");
    tokio::spawn(tessera_channel::echo(listener));
    let err = c
        .connect(&first.url, trust, &me)
        .await
        .expect_err("changed key");
    assert!(err.to_string().contains("CHANGED"), "{err}");
}

#[tokio::test]
async fn allow_list_admits_listed_clients_only() {
    let allowed = Identity::generate();
    let (server, listener) = start_with(
        AllowList::new([allowed.public_key()]),
        ChannelConfig::default(),
    )
    .await;
    tokio::spawn(tessera_channel::echo(listener));
    let c = connector();
    let mut ok = c
        .connect(&server.url, server.identity.public_key(), &allowed)
        .await
        .expect("allowed");
    ok.send(&b"x"[..]).await.expect("send");
    assert!(ok.recv().await.expect("echo").is_some());
    let err = server.connect(&c).await.expect_err("not allowed");
    assert!(
        matches!(&err, ChannelError::PeerClosed { code, reason } if *code == close_code::REJECTED && reason.contains("allow-list")),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_messages_are_refused_locally_and_remotely() {
    let server = echo_server(ChannelConfig {
        max_message_size: 100_000,
        ..ChannelConfig::default()
    })
    .await;
    let c = tessera_channel::Connector::new(
        registry("big-client"),
        ChannelConfig {
            max_message_size: 1_000_000,
            ..ChannelConfig::default()
        },
    );
    let mut channel = server.connect(&c).await.expect("connect");
    // Locally: above our own limit, refused without closing.
    let err = channel
        .send(vec![0u8; 1_000_001])
        .await
        .expect_err("too large");
    assert!(matches!(err, ChannelError::TooLarge { .. }));
    // Remotely: the server's limit is lower; it closes with 4002.
    channel.send(vec![0u8; 200_000]).await.expect("queued");
    let err = channel.recv().await.expect_err("closed by server");
    assert!(
        matches!(&err, ChannelError::PeerClosed { code, .. } if *code == close_code::TOO_LARGE),
        "{err}"
    );
    wait_empty(server.registry(), LIMIT).await;
}

#[tokio::test]
async fn nonce_exhaustion_closes_the_channel() {
    let server = echo_server(ChannelConfig::default()).await;
    let c = tessera_channel::Connector::new(
        registry("nonce-client"),
        ChannelConfig {
            max_messages: 3,
            ..ChannelConfig::default()
        },
    );
    let mut channel = server.connect(&c).await.expect("connect");
    for _ in 0..3 {
        channel.send(&b"m"[..]).await.expect("send");
    }
    // The 4th message would need nonce 3: the writer closes with 4006 instead of sending it.
    let _ = channel.send(&b"m"[..]).await;
    let mut echoed = 0;
    let err = loop {
        match channel.recv().await {
            Ok(Some(_)) => echoed += 1,
            Ok(None) => panic!("should not be a normal close"),
            Err(e) => break e,
        }
    };
    assert!(echoed <= 3);
    assert!(
        matches!(&err, ChannelError::Aborted { code, .. } if *code == close_code::NONCE_EXHAUSTED),
        "{err}"
    );
    wait_empty(server.registry(), LIMIT).await;
    wait_empty(c.registry(), LIMIT).await;
}

#[tokio::test]
async fn server_shutdown_closes_channels_with_going_away() {
    let server = echo_server(ChannelConfig::default()).await;
    let mut channel = server.connect(&connector()).await.expect("connect");
    let report = server.serving.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.cancelled, 0, "{report:?}");
    let err = channel.recv().await.expect_err("closed");
    assert!(
        matches!(&err, ChannelError::PeerClosed { code, .. } if *code == close_code::GOING_AWAY),
        "{err}"
    );
}

#[tokio::test]
async fn connect_convenience_function_works() {
    let server = echo_server(ChannelConfig::default()).await;
    let mut channel = tessera_channel::connect(
        &server.url,
        server.identity.public_key(),
        &Identity::generate(),
    )
    .await
    .expect("connect");
    channel.send(&b"hi"[..]).await.expect("send");
    assert_eq!(
        channel.recv().await.expect("recv").as_deref(),
        Some(&b"hi"[..])
    );
}

#[tokio::test]
async fn close_delivers_queued_messages_first() {
    let (server, mut listener) = start_with(AnyKey, ChannelConfig::default()).await;
    let accept = tokio::spawn(async move { listener.accept().await.expect("accepted") });
    let client = server.connect(&connector()).await.expect("connect");
    let mut accepted = accept.await.expect("join");
    for i in 0..40u8 {
        client.send(vec![i; 5000]).await.expect("send");
    }
    client.close().await;
    for i in 0..40u8 {
        let m = accepted.recv().await.expect("recv").expect("message");
        assert_eq!((m[0], m.len()), (i, 5000));
    }
    assert_eq!(accepted.recv().await.expect("normal close"), None);
}

#[tokio::test]
async fn a_full_accept_queue_turns_new_channels_away_with_1013_and_keeps_the_queued_ones() {
    let config = ChannelConfig {
        accept_queue: 2,
        ..ChannelConfig::default()
    };
    let (server, mut listener) = start_with(AnyKey, config).await;
    let c = connector();
    let key = server.identity.public_key();
    // Nobody accepts yet: the first two channels wait in the queue, established.
    let mut queued = Vec::new();
    for _ in 0..2 {
        let me = Identity::generate();
        queued.push(c.connect(&server.url, key, &me).await.expect("queued"));
    }
    // The third finds the queue full: the server ends it with 1013 (try again later), at once or right
    // after session_established.
    let refused = match c.connect(&server.url, key, &Identity::generate()).await {
        Err(e) => e,
        Ok(mut channel) => channel
            .recv()
            .await
            .expect_err("refused after establishment"),
    };
    assert!(
        matches!(&refused, ChannelError::PeerClosed { code, reason }
            if *code == close_code::TRY_AGAIN_LATER && reason.contains("busy")),
        "{refused}"
    );
    // The queued two are still there and work once accepted.
    for client in &mut queued {
        let mut accepted = tokio::time::timeout(LIMIT, listener.accept())
            .await
            .expect("accept in time")
            .expect("queued channel");
        client.send(&b"still here"[..]).await.expect("send");
        assert_eq!(
            accepted.recv().await.expect("recv").as_deref(),
            Some(&b"still here"[..])
        );
    }
    for client in queued {
        client.close().await;
    }
    drop(listener);
    // Every session ends, the refused one's included.
    wait_empty(server.registry(), LIMIT).await;
}

#[tokio::test]
async fn the_client_chooses_the_protocol_version_and_the_server_speaks_both() {
    let (server, mut listener) = start_with(AnyKey, ChannelConfig::default()).await;
    for suite in tessera_channel::Suite::ALL {
        let config = ChannelConfig {
            suite,
            ..ChannelConfig::default()
        };
        let c = tessera_channel::Connector::new(registry("suite-client"), config);
        let client = server.connect(&c).await.expect("connect");
        let mut accepted = listener.accept().await.expect("accepted");
        assert_eq!(client.info().suite, suite);
        assert_eq!(accepted.info().suite, suite);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        client.send(big.clone()).await.expect("send");
        assert_eq!(
            accepted.recv().await.expect("recv").as_deref(),
            Some(&big[..])
        );
        client.close().await;
    }
}
