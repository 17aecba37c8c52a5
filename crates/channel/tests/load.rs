//! Load: many concurrent handshakes, many connect/disconnect cycles; session counts must return to zero.
//!
//! 10,000 cycles, in test builds too: the workspace compiles dependencies (the crypto) optimized even in
//! the dev profile, so the whole file takes ~10 s. `TESSERA_CHANNEL_CYCLES` overrides the count.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tessera_channel::{ChannelConfig, Identity};
use tokio::sync::Semaphore;

/// Resident set size of this process, from /proc (Linux only).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A registry whose idle timeout does not cut handshakes that wait their turn for the CPU.
fn patient_registry(name: &'static str) -> tessera_session::Registry {
    let mut config = tessera_session::RegistryConfig::new(name);
    config.idle_timeout = Duration::from_secs(300);
    tessera_session::Registry::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_handshakes() {
    // All 1,000 handshakes are in flight at once on 2 cores; in a debug build that takes ~45 s in total,
    // longer than the default 30 s handshake timeout, which is not what this test is about.
    // The accept queue holds them all too: on a busy machine the echo task's accept loop can fall behind
    // the handshakes, and a full queue (correctly) turns new channels away with 1013, which is not what
    // this test is about either.
    let config = ChannelConfig {
        handshake_timeout: Duration::from_secs(300),
        accept_queue: 1000,
        ..ChannelConfig::default()
    };
    let (server, listener) = start_with_registry(
        tessera_channel::AnyKey,
        config.clone(),
        patient_registry("load-server"),
    )
    .await;
    tokio::spawn(tessera_channel::echo(listener));
    let connector = tessera_channel::Connector::new(patient_registry("load-client"), config);
    let key = server.identity.public_key();
    let rss_before = rss_kib();
    let started = Instant::now();
    let tasks: Vec<_> = (0..1000u32)
        .map(|i| {
            let connector = connector.clone();
            let url = server.url.clone();
            tokio::spawn(async move {
                let me = Identity::generate();
                let mut channel = connector.connect(&url, key, &me).await.expect("connect");
                channel.send(i.to_be_bytes().to_vec()).await.expect("send");
                let echoed = channel.recv().await.expect("recv").expect("message");
                assert_eq!(&echoed[..], &i.to_be_bytes());
                channel
            })
        })
        .collect();
    let mut channels = Vec::new();
    for task in tasks {
        channels.push(task.await.expect("join"));
    }
    eprintln!(
        "1,000 concurrent handshakes + echo: {:?}",
        started.elapsed()
    );
    if let (Some(before), Some(after)) = (rss_before, rss_kib()) {
        eprintln!(
            "resident memory per idle connection (client and server end, one process): {} KiB",
            after.saturating_sub(before) / 1000
        );
    }
    assert_eq!(server.registry().len(), 1000);
    assert_eq!(connector.registry().len(), 1000);
    drop(channels);
    wait_empty(server.registry(), Duration::from_secs(30)).await;
    wait_empty(connector.registry(), Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_connect_disconnect_cycles_leave_no_session() {
    let cycles: usize = std::env::var("TESSERA_CHANNEL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let server = echo_server(ChannelConfig::default()).await;
    let connector = connector();
    let key = server.identity.public_key();
    let me = Arc::new(Identity::generate());
    let parallel = Arc::new(Semaphore::new(16));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(cycles);
    for i in 0..cycles {
        let permit = parallel.clone().acquire_owned().await.expect("semaphore");
        let (connector, url, me) = (connector.clone(), server.url.clone(), me.clone());
        tasks.push(tokio::spawn(async move {
            let channel = connector.connect(&url, key, &me).await.expect("connect");
            // Half close gracefully, half just drop the channel.
            if i % 2 == 0 {
                channel.close().await;
            } else {
                drop(channel);
            }
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.expect("join");
    }
    eprintln!(
        "{cycles} connect/disconnect cycles: {:?}",
        started.elapsed()
    );
    wait_empty(server.registry(), Duration::from_secs(30)).await;
    wait_empty(connector.registry(), Duration::from_secs(30)).await;
    // Every session task has finished too (the last ones may still be returning right after their session
    // ended).
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.registry().tasks().len() + connector.registry().tasks().len() > 0 {
        assert!(Instant::now() < deadline, "session tasks left running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
