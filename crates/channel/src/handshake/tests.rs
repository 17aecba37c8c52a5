//! In-memory handshake tests: every attack here runs against the same states the network drivers use.

use super::*;
use crate::policy::ServerTrust;

struct Run {
    client_hello: Vec<u8>,
    server_hello: Vec<u8>,
    client_auth: Vec<u8>,
    client: Established,
    server: Established,
}

fn full(client: &Identity, server: &Identity) -> Run {
    full_with(
        Suite::ChaChaPoly,
        CipherImpl::Compact,
        CipherImpl::Compact,
        client,
        server,
    )
}

fn full_with(
    suite: Suite,
    client_cipher: CipherImpl,
    server_cipher: CipherImpl,
    client: &Identity,
    server: &Identity,
) -> Run {
    let (expect_sh, client_hello) = client_hello::start_with(
        suite,
        client_cipher,
        client,
        ServerTrust::Key(server.public_key()),
        "h:1".into(),
        b"token".to_vec(),
    )
    .expect("start");
    let (expect_ca, server_hello) = ExpectClientHello::with_cipher(server, 1024, server_cipher)
        .handle(&client_hello)
        .expect("client_hello");
    let (expect_se, client_auth) = expect_sh.handle(&server_hello).expect("server_hello");
    let authenticated = expect_ca.handle(&client_auth).expect("client_auth");
    assert_eq!(authenticated.peer(), client.public_key());
    assert_eq!(authenticated.auth_payload(), b"token");
    let (server_est, established) = authenticated
        .establish([9; 16], 42, b"welcome")
        .expect("establish");
    let client_est = expect_se.handle(&established).expect("session_established");
    assert_eq!(client_est.info.suite, suite);
    assert_eq!(server_est.info.suite, suite);
    Run {
        client_hello,
        server_hello,
        client_auth,
        client: client_est,
        server: server_est,
    }
}

#[test]
fn both_cipher_implementations_speak_the_same_wire_in_every_version() {
    use CipherImpl::{Compact, Fast};
    let pairs = [
        (Compact, Compact),
        (Compact, Fast),
        (Fast, Compact),
        (Fast, Fast),
    ];
    for (suite, (client_cipher, server_cipher)) in Suite::ALL
        .into_iter()
        .flat_map(|suite| pairs.map(|pair| (suite, pair)))
    {
        let (c, s) = (Identity::generate(), Identity::generate());
        let mut run = full_with(suite, client_cipher, server_cipher, &c, &s);
        let long: Vec<u8> = (0..frame::MAX_FRAGMENT as u32).map(|i| i as u8).collect();
        let mut plaintext = vec![frame::TYPE_DATA];
        plaintext.extend_from_slice(&long);
        let mut out = vec![0u8; frame::MAX_FRAME];
        for _ in 0..3 {
            let sealed = run.client.seal(&plaintext).expect("seal");
            let n = run.server.open(&sealed, &mut out).expect("open");
            assert_eq!(
                &out[..n],
                &plaintext[..],
                "{suite:?}: {client_cipher:?} → {server_cipher:?}"
            );
            let sealed = run.server.seal(&plaintext[..100]).expect("seal");
            let n = run.client.open(&sealed, &mut out).expect("open");
            assert_eq!(
                &out[..n],
                &plaintext[..100],
                "{suite:?}: {server_cipher:?} → {client_cipher:?}"
            );
        }
        // A flipped bit fails on either implementation.
        let mut sealed = run.client.seal(&plaintext[..10]).expect("seal");
        sealed[5] ^= 1;
        assert!(run.server.open(&sealed, &mut out).is_err());
    }
}

#[test]
fn handshake_succeeds_and_both_sides_agree() {
    let (c, s) = (Identity::generate(), Identity::generate());
    let mut run = full(&c, &s);
    assert_eq!(run.client.info.peer, s.public_key());
    assert_eq!(run.server.info.peer, c.public_key());
    assert_eq!(
        run.client.info.channel_binding,
        run.server.info.channel_binding
    );
    assert_eq!(run.client.info.session_id, [9; 16]);
    assert_eq!(run.client.info.expires_at, 42);
    assert_eq!(run.client.info.peer_payload, b"welcome");
    assert_eq!(run.server.info.peer_payload, b"token");
    // Transport works both ways.
    let frame = run.client.seal(&[frame::TYPE_DATA, 1, 2, 3]).expect("seal");
    let mut out = [0u8; 64];
    let n = run.server.open(&frame, &mut out).expect("open");
    assert_eq!(&out[..n], &[frame::TYPE_DATA, 1, 2, 3]);
    let frame = run.server.seal(&[frame::TYPE_DATA, 4]).expect("seal");
    let n = run.client.open(&frame, &mut out).expect("open");
    assert_eq!(&out[..n], &[frame::TYPE_DATA, 4]);
    // A replayed transport frame fails (the nonce moved on).
    assert!(matches!(
        run.client.open(&frame, &mut out),
        Err(ChannelError::Decrypt(_))
    ));
}

#[test]
fn wrong_pinned_key_is_rejected_before_client_auth() {
    let (c, s) = (Identity::generate(), Identity::generate());
    let other = Identity::generate().public_key();
    let (expect_sh, hello) =
        client_hello::start(&c, ServerTrust::Key(other), "h:1".into(), vec![]).expect("start");
    let (_, server_hello) = ExpectClientHello::new(&s, 1024)
        .handle(&hello)
        .expect("hello");
    let err = expect_sh.handle(&server_hello).err().expect("must fail");
    assert!(
        matches!(err, ChannelError::ServerKeyMismatch { presented, .. } if presented == s.public_key())
    );
    assert_eq!(err.close_code(), crate::error::close_code::REJECTED);
}

#[test]
fn mitm_swapping_the_ephemeral_key_fails() {
    let (c, s) = (Identity::generate(), Identity::generate());
    let (expect_sh, mut hello) =
        client_hello::start(&c, s.public_key().into(), "h:1".into(), vec![]).expect("start");
    // The attacker replaces the client's ephemeral key with its own.
    let attacker_e = Identity::generate().public_key();
    hello[1..33].copy_from_slice(attacker_e.as_bytes());
    let (_, server_hello) = ExpectClientHello::new(&s, 1024)
        .handle(&hello)
        .expect("server cannot tell");
    // ee no longer matches: the client cannot decrypt the server's static key.
    let err = expect_sh.handle(&server_hello).err().expect("must fail");
    assert!(
        matches!(err, ChannelError::Decrypt("server_hello")),
        "{err}"
    );
}

#[test]
fn active_mitm_with_its_own_static_key_is_refused_by_the_pin() {
    let (c, s, m) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let (expect_sh, hello) =
        client_hello::start(&c, s.public_key().into(), "h:1".into(), vec![]).expect("start");
    // The attacker terminates the client's handshake itself.
    let (_, server_hello) = ExpectClientHello::new(&m, 1024)
        .handle(&hello)
        .expect("hello");
    assert!(matches!(
        expect_sh.handle(&server_hello),
        Err(ChannelError::ServerKeyMismatch { .. })
    ));
}

#[test]
fn client_auth_relayed_under_another_ephemeral_fails() {
    let (c, s, attacker) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    // The victim runs a handshake with the server and produces client_auth.
    let (victim_sh, victim_hello) =
        client_hello::start(&c, s.public_key().into(), "h:1".into(), vec![]).expect("start");
    let (_, victim_server_hello) = ExpectClientHello::new(&s, 1024)
        .handle(&victim_hello)
        .expect("hello");
    let (_, victim_auth) = victim_sh.handle(&victim_server_hello).expect("sh");
    // The attacker opens its own connection (its own ephemeral) and relays the victim's client_auth.
    let (_, attacker_hello) =
        client_hello::start(&attacker, s.public_key().into(), "h:1".into(), vec![]).expect("start");
    let (server_state, _) = ExpectClientHello::new(&s, 1024)
        .handle(&attacker_hello)
        .expect("hello");
    assert!(matches!(
        server_state.handle(&victim_auth),
        Err(ChannelError::Decrypt("client_auth"))
    ));
}

#[test]
fn client_auth_replayed_on_a_new_connection_fails() {
    let (c, s) = (Identity::generate(), Identity::generate());
    let run = full(&c, &s);
    // Replay the whole recorded client side against a fresh server state.
    let (state, _) = ExpectClientHello::new(&s, 1024)
        .handle(&run.client_hello)
        .expect("a replayed hello looks fresh");
    assert!(matches!(
        state.handle(&run.client_auth),
        Err(ChannelError::Decrypt("client_auth"))
    ));
}

#[test]
fn duplicate_and_out_of_order_messages_are_protocol_errors() {
    let (c, s) = (Identity::generate(), Identity::generate());
    let run = full(&c, &s);
    // Server waiting for client_auth gets a second client_hello.
    let (state, _) = ExpectClientHello::new(&s, 1024)
        .handle(&run.client_hello)
        .expect("hello");
    let err = state.handle(&run.client_hello).err().expect("dup");
    assert!(
        err.to_string()
            .contains("unexpected client_hello while expecting client_auth"),
        "{err}"
    );
    assert_eq!(err.close_code(), crate::error::close_code::PROTOCOL);
    // Client waiting for session_established gets a second server_hello.
    let (sh, hello) =
        client_hello::start(&c, s.public_key().into(), "h:1".into(), vec![]).expect("start");
    let (_, server_hello) = ExpectClientHello::new(&s, 1024)
        .handle(&hello)
        .expect("hello");
    let (se, _) = sh.handle(&server_hello).expect("sh");
    assert!(matches!(
        se.handle(&server_hello),
        Err(ChannelError::Protocol(_))
    ));
    // A server waiting for client_hello gets client_auth first.
    assert!(matches!(
        ExpectClientHello::new(&s, 1024).handle(&run.client_auth),
        Err(ChannelError::Protocol(_))
    ));
    // server_hello sent to a server.
    assert!(
        ExpectClientHello::new(&s, 1024)
            .handle(&run.server_hello)
            .is_err()
    );
}

#[test]
fn unsupported_version_is_reported_as_such() {
    let s = Identity::generate();
    let params: snow::params::NoiseParams =
        Suite::ChaChaPoly.noise_params().parse().expect("params");
    let mut hs = snow::Builder::new(params)
        .local_private_key(Identity::generate().expose_private())
        .and_then(|b| b.prologue(Suite::ChaChaPoly.prologue()))
        .and_then(|b| b.build_initiator())
        .expect("hs");
    let hello = crate::frame::ClientHello {
        version: 7,
        nonce: [0; 32],
    };
    let frame = write(&mut hs, FrameKind::ClientHello, &hello.encode()).expect("write");
    assert!(matches!(
        ExpectClientHello::new(&s, 1024).handle(&frame),
        Err(ChannelError::UnsupportedVersion(7))
    ));
}

#[test]
fn oversized_auth_payload_is_refused() {
    let (c, s) = (Identity::generate(), Identity::generate());
    let (sh, hello) =
        client_hello::start(&c, s.public_key().into(), "h:1".into(), vec![0; 2000]).expect("start");
    let (ca, server_hello) = ExpectClientHello::new(&s, 1024)
        .handle(&hello)
        .expect("hello");
    let (_, auth) = sh.handle(&server_hello).expect("sh");
    assert!(matches!(
        ca.handle(&auth),
        Err(ChannelError::TooLarge {
            size: 2000,
            limit: 1024
        })
    ));
}

#[test]
fn a_version_claim_that_is_not_the_noise_protocol_spoken_fails_the_handshake() {
    // A client_hello written under version 1's Noise protocol and prologue that claims version 2 (as a
    // downgrade or upgrade in transit would): the server reads it as version 2 and the client cannot read
    // the server_hello that follows, since the prologues (and ciphers) differ.
    // Both ways: version 1 relabelled 2, and version 2 (what the TEE clients speak) relabelled 1.
    for (spoken, claimed) in [
        (Suite::ChaChaPoly, Suite::AesGcm),
        (Suite::AesGcm, Suite::ChaChaPoly),
    ] {
        let (c, s) = (Identity::generate(), Identity::generate());
        let (expect_sh, mut hello) = client_hello::start_with(
            spoken,
            CipherImpl::Compact,
            &c,
            s.public_key().into(),
            "h:1".into(),
            vec![],
        )
        .expect("start");
        // frame kind (1) || e (32) || version (2) || nonce (32)
        hello[1 + frame::KEY_LEN..1 + frame::KEY_LEN + 2]
            .copy_from_slice(&claimed.version().to_be_bytes());
        let (_, server_hello) = ExpectClientHello::new(&s, 1024)
            .handle(&hello)
            .expect("the server speaks both versions");
        assert!(
            matches!(
                expect_sh.handle(&server_hello),
                Err(ChannelError::Decrypt("server_hello"))
            ),
            "{spoken:?} claimed as {claimed:?}"
        );
    }
}

/// A client on plain `snow`, built from docs/channel.md alone, against our server states: pins which key
/// of `Split()` each side sends with (both ends of our own code would agree on a swapped mapping).
#[test]
fn a_plain_snow_client_talks_to_our_server() {
    for suite in Suite::ALL {
        for server_cipher in [CipherImpl::Compact, CipherImpl::Fast] {
            let (c, s) = (Identity::generate(), Identity::generate());
            let params: snow::params::NoiseParams = suite.noise_params().parse().unwrap();
            let mut hs = snow::Builder::new(params)
                .local_private_key(c.expose_private())
                .unwrap()
                .prologue(suite.prologue())
                .unwrap()
                .build_initiator()
                .unwrap();
            let mut buf = vec![0u8; frame::MAX_NOISE_MESSAGE];
            let hello = frame::ClientHello {
                version: suite.version(),
                nonce: [7; frame::NONCE_LEN],
            };
            let n = hs.write_message(&hello.encode(), &mut buf).unwrap();
            let client_hello = frame::encode(FrameKind::ClientHello, &buf[..n]);
            let (expect_ca, server_hello) = ExpectClientHello::with_cipher(&s, 1024, server_cipher)
                .handle(&client_hello)
                .expect("client_hello");
            let mut payload = vec![0u8; frame::MAX_NOISE_MESSAGE];
            hs.read_message(frame::decode(&server_hello).unwrap().noise, &mut payload)
                .expect("server_hello");
            let n = hs.write_message(b"token", &mut buf).unwrap();
            let client_auth = frame::encode(FrameKind::ClientAuth, &buf[..n]);
            let (mut server, established) = expect_ca
                .handle(&client_auth)
                .expect("client_auth")
                .establish([3; 16], 0, b"hi")
                .expect("establish");
            let client = hs.into_stateless_transport_mode().unwrap();
            let n = client
                .read_message(0, frame::decode(&established).unwrap().noise, &mut payload)
                .expect("session_established under the responder's key");
            let Ok(frame::Plaintext::SessionEstablished(est)) =
                frame::Plaintext::decode(&payload[..n])
            else {
                panic!("not session_established");
            };
            assert_eq!((est.session_id, est.payload), ([3; 16], &b"hi"[..]));
            // Client → server under the initiator's key, then server → client.
            let n = client
                .write_message(0, &[frame::TYPE_DATA, 1, 2, 3], &mut buf)
                .unwrap();
            let sealed = frame::encode(FrameKind::Transport, &buf[..n]);
            let mut out = vec![0u8; sealed.len()];
            let n = server.open(&sealed, &mut out).expect("open");
            assert_eq!(&out[..n], &[frame::TYPE_DATA, 1, 2, 3], "{suite:?}");
            let sealed = server.seal(&[frame::TYPE_DATA, 4, 5]).expect("seal");
            let n = client
                .read_message(1, frame::decode(&sealed).unwrap().noise, &mut payload)
                .expect("the server's second transport message");
            assert_eq!(&payload[..n], &[frame::TYPE_DATA, 4, 5], "{suite:?}");
        }
    }
}
