//! No plaintext left behind in freed memory: while messages cross a real channel (client → echo server →
//! client, one small and one fragmented message), every heap block the process frees is scanned for the
//! messages' marker bytes. The writer scrubs what it encrypted, the reader what it reassembled, and the
//! receiver scrubs what it read ([`tessera_session::scrub`]): no freed block may hold the marker.
//!
//! The scan is a global allocator of this test binary only, so the file holds one test. The marker is
//! never held whole in a local: the scanner and the helpers read it a byte at a time from statics, since a
//! copy left on the stack would be carried into the heap by the next future built there (a spawned task's
//! uninitialized bytes), and found as if the channel had leaked it.

mod common;
mod scan;

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use scan::{ARMED, HITS, Scanning};
use tessera_channel::{ChannelConfig, Connector};

const MARK: usize = 16;

static MARKER: [AtomicU8; MARK] = [const { AtomicU8::new(0) }; MARK];

/// The marker's byte at position `i` of a marked message.
fn marker_byte(i: usize) -> u8 {
    MARKER[i % MARK].load(Ordering::Relaxed)
}

fn holds_marker(block: &[u8]) -> bool {
    block
        .windows(MARK)
        .any(|w| w.iter().enumerate().all(|(i, &b)| b == marker_byte(i)))
}

#[global_allocator]
static ALLOCATOR: Scanning = Scanning {
    matches: holds_marker,
    min: MARK,
};

/// A message of `len` bytes made of the marker, built in one allocation (no growth leaves copies).
fn marked_message(len: usize) -> Bytes {
    let mut message = Vec::with_capacity(len);
    message.extend((0..len).map(marker_byte));
    Bytes::from(message)
}

fn is_marked(message: &[u8]) -> bool {
    message
        .iter()
        .enumerate()
        .all(|(i, &b)| b == marker_byte(i))
}

#[tokio::test]
async fn no_freed_block_holds_a_messages_plaintext() {
    for slot in &MARKER {
        slot.store(rand::random(), Ordering::Relaxed);
    }
    // Version 1 on RustCrypto (the default, the relay's) and version 2 on ring (the TEE services').
    let tee_like = ChannelConfig {
        suite: tessera_channel::Suite::AesGcm,
        cipher: tessera_channel::CipherImpl::Fast,
        ..ChannelConfig::default()
    };
    for config in [ChannelConfig::default(), tee_like] {
        let server = echo_server(config.clone()).await;
        let client_registry = registry("scrub-client");
        let connector = Connector::new(client_registry.clone(), config.clone());
        let mut channel = server.connect(&connector).await.expect("connect");

        // The scan sees what it should: a buffer holding the marker, freed as it is, counts.
        ARMED.store(true, Ordering::Relaxed);
        drop(marked_message(64));
        assert_eq!(
            HITS.swap(0, Ordering::Relaxed),
            1,
            "the scan missed a marked block"
        );

        // Small, fragmented (three fragments: the reader's reassembly grows), and small again (the reader's
        // kept reservation).
        for len in [200, 150_000, 300] {
            channel.send(marked_message(len)).await.expect("send");
            let echoed = channel.recv().await.expect("recv").expect("a message");
            assert_eq!(echoed.len(), len);
            assert!(is_marked(&echoed), "the echo differs");
            assert!(
                tessera_session::scrub(echoed),
                "the received buffer was shared"
            );
        }
        channel.close().await;
        wait_empty(server.registry(), Duration::from_secs(10)).await;
        for tasks in [server.registry().tasks(), client_registry.tasks()] {
            tasks.close();
            tokio::time::timeout(Duration::from_secs(10), tasks.wait())
                .await
                .expect("the channels' tasks end");
        }
        ARMED.store(false, Ordering::Relaxed);
        assert_eq!(
            HITS.swap(0, Ordering::Relaxed),
            0,
            "freed blocks held a message's plaintext ({:?}, {:?})",
            config.suite,
            config.cipher
        );
    }
    ARMED.store(false, Ordering::Relaxed);
    assert_eq!(
        HITS.load(Ordering::Relaxed),
        0,
        "freed blocks held a message's plaintext"
    );
}
