//! No key left behind by a handshake: while handshakes run through the handshake states (every version,
//! every pairing of cipher implementations), every heap block the process frees is scanned for either
//! side's static key pair. snow copies the static key into its X25519 primitive, and its Noise state
//! holds the peer's public key inline: the primitives wipe themselves and the state is overwritten in
//! place when the handshake ends (`src/handshake/resolver.rs`, `src/handshake/noise.rs`), so no freed
//! block may hold a key. (The ephemeral keys, `ck` and the cipher keys never leave the crate; they go with
//! the same primitives and the same state, and the unit tests check those wipes.)
//!
//! The scan is a global allocator of this test binary only, so the file holds one test.

mod scan;

use std::sync::atomic::{AtomicU8, Ordering};

use scan::{ARMED, HITS, Scanning};

use tessera_channel::handshake::{ExpectClientHello, client_hello};
use tessera_channel::{CipherImpl, Identity, ServerTrust, Suite};

/// Bytes of a key that count as a leftover: either half of it.
const MARK: usize = 16;

/// The client's and the server's private and public keys.
static KEYS: [[AtomicU8; 32]; 4] = [const { [const { AtomicU8::new(0) }; 32] }; 4];

fn holds_a_key(block: &[u8]) -> bool {
    KEYS.iter().any(|key| {
        [0, MARK].into_iter().any(|half| {
            block.windows(MARK).any(|w| {
                w.iter()
                    .enumerate()
                    .all(|(i, &b)| b == key[half + i].load(Ordering::Relaxed))
            })
        })
    })
}

#[global_allocator]
static ALLOCATOR: Scanning = Scanning {
    matches: holds_a_key,
    min: MARK,
};

/// One handshake through the states, in memory; everything it built is dropped on return.
fn handshake(
    suite: Suite,
    client_cipher: CipherImpl,
    server_cipher: CipherImpl,
    c: &Identity,
    s: &Identity,
) {
    let (expect_sh, hello) = client_hello::start_with(
        suite,
        client_cipher,
        c,
        ServerTrust::Key(s.public_key()),
        "h:1".into(),
        b"token".to_vec(),
    )
    .expect("start");
    let (expect_ca, server_hello) = ExpectClientHello::with_cipher(s, 1024, server_cipher)
        .handle(&hello)
        .expect("client_hello");
    let (expect_se, auth) = expect_sh.handle(&server_hello).expect("server_hello");
    let authenticated = expect_ca.handle(&auth).expect("client_auth");
    assert_eq!(authenticated.peer(), c.public_key());
    let (server, established) = authenticated
        .establish([9; 16], 0, b"welcome")
        .expect("establish");
    let client = expect_se.handle(&established).expect("session_established");
    assert_eq!(client.info().channel_binding, server.info().channel_binding);
}

#[test]
fn no_freed_block_holds_a_static_key() {
    let (client, server) = (Identity::generate(), Identity::generate());
    let keys = [
        *client.expose_private(),
        *client.public_key().as_bytes(),
        *server.expose_private(),
        *server.public_key().as_bytes(),
    ];
    for (slots, key) in KEYS.iter().zip(keys) {
        for (slot, b) in slots.iter().zip(key) {
            slot.store(b, Ordering::Relaxed);
        }
    }

    // The scan sees what it should: a block holding a key, freed as it is, counts.
    ARMED.store(true, Ordering::Relaxed);
    drop(client.public_key().as_bytes().to_vec());
    assert_eq!(HITS.swap(0, Ordering::Relaxed), 1, "the scan missed a key");

    use CipherImpl::{Compact, Fast};
    for suite in Suite::ALL {
        for (client_cipher, server_cipher) in [(Compact, Compact), (Fast, Fast), (Compact, Fast)] {
            handshake(suite, client_cipher, server_cipher, &client, &server);
            // A handshake that fails half-way (the server's identity is not the pinned one) leaves
            // nothing either: its states are dropped with the error.
            let (expect_sh, hello) = client_hello::start_with(
                suite,
                client_cipher,
                &client,
                ServerTrust::Key(client.public_key()),
                "h:1".into(),
                Vec::new(),
            )
            .expect("start");
            let (_expect_ca, server_hello) =
                ExpectClientHello::with_cipher(&server, 1024, server_cipher)
                    .handle(&hello)
                    .expect("client_hello");
            assert!(expect_sh.handle(&server_hello).is_err());
            assert_eq!(
                HITS.load(Ordering::Relaxed),
                0,
                "freed blocks held a static key ({suite:?}, {client_cipher:?}→{server_cipher:?})"
            );
        }
    }
    ARMED.store(false, Ordering::Relaxed);
}
