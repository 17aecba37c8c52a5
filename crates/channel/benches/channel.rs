//! Channel benchmarks, each beside its ceiling measured in the same run: the same work done by `snow`
//! alone, in memory.
//!
//! * `handshake/snow_in_memory` — a full XX handshake (both sides) with snow, no I/O.
//! * `handshake/states_in_memory/<suite>_<cipher>` — the same through this crate's handshake states
//!   (`tessera_channel::handshake`: payloads, pin check, session_established, key handling), no I/O.
//! * `handshake/websocket_loopback` — `Connector::connect` to a server on 127.0.0.1: TCP connect, WebSocket
//!   upgrade, the four handshake messages, session set-up on both sides, one at a time.
//! * `transport/<size>/snow_in_memory` — encrypt and decrypt one message of `size` bytes, fragmented as the
//!   channel does (65,518-byte bodies behind a type byte).
//! * `transport/<size>/websocket_loopback` — one-way stream of `size`-byte messages from a client to a
//!   server over loopback; the server acknowledges the end of each batch.
//! * `transport/<size>/…_aesgcm_ring` — the same in protocol version 2 (AES-256-GCM), run on ring at both
//!   ends (`CipherImpl::Fast`), as the TEE services run their channels.
//!
//! Run: `cargo bench -p tessera-channel --bench channel -- --warm-up-time 1 --measurement-time 3`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use snow::{Builder, StatelessTransportState};
use tessera_channel::frame::{MAX_FRAGMENT, Suite, TYPE_DATA, TYPE_DATA_MORE};
use tessera_channel::handshake::{ExpectClientHello, client_hello};
use tessera_channel::{
    AnyKey, ChannelConfig, CipherImpl, Connector, Identity, Server, ServerTrust, serve,
};
use tessera_session::{Registry, RegistryConfig};

fn registry(name: &'static str) -> Registry {
    let mut config = RegistryConfig::new(name);
    config.max_sessions = 100_000;
    Registry::new(config)
}

fn snow_handshake(
    client: &Identity,
    server: &Identity,
) -> (StatelessTransportState, StatelessTransportState) {
    snow_handshake_with(Suite::ChaChaPoly, false, client, server)
}

/// A snow handshake in `suite`, the cipher on ring (`ring`) or on snow's default (RustCrypto) resolver.
fn snow_handshake_with(
    suite: Suite,
    ring: bool,
    client: &Identity,
    server: &Identity,
) -> (StatelessTransportState, StatelessTransportState) {
    use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver, RingResolver};
    let builder = || {
        let params = suite.noise_params().parse().expect("params");
        let resolver: Box<dyn CryptoResolver + Send> = if ring {
            Box::new(FallbackResolver::new(
                Box::new(RingResolver),
                Box::new(DefaultResolver),
            ))
        } else {
            Box::new(DefaultResolver)
        };
        Builder::with_resolver(params, resolver)
    };
    let mut i = builder()
        .local_private_key(client.expose_private())
        .and_then(|b| b.prologue(suite.prologue()))
        .and_then(|b| b.build_initiator())
        .expect("initiator");
    let mut r = builder()
        .local_private_key(server.expose_private())
        .and_then(|b| b.prologue(suite.prologue()))
        .and_then(|b| b.build_responder())
        .expect("responder");
    let (mut buf, mut payload) = (vec![0u8; 1024], vec![0u8; 1024]);
    let n = i.write_message(&[0u8; 34], &mut buf).expect("m1");
    r.read_message(&buf[..n], &mut payload).expect("m1");
    let n = r.write_message(&[0u8; 32], &mut buf).expect("m2");
    i.read_message(&buf[..n], &mut payload).expect("m2");
    let n = i.write_message(&[], &mut buf).expect("m3");
    r.read_message(&buf[..n], &mut payload).expect("m3");
    (
        i.into_stateless_transport_mode().expect("i"),
        r.into_stateless_transport_mode().expect("r"),
    )
}

/// A full handshake through this crate's states (both sides), in memory.
fn states_handshake(suite: Suite, cipher: CipherImpl, client: &Identity, server: &Identity) {
    let (expect_sh, hello) = client_hello::start_with(
        suite,
        cipher,
        client,
        ServerTrust::Key(server.public_key()),
        "h:1".into(),
        b"token".to_vec(),
    )
    .expect("start");
    let (expect_ca, server_hello) = ExpectClientHello::with_cipher(server, 1024, cipher)
        .handle(&hello)
        .expect("client_hello");
    let (expect_se, auth) = expect_sh.handle(&server_hello).expect("server_hello");
    let (server_est, established) = expect_ca
        .handle(&auth)
        .expect("client_auth")
        .establish([9; 16], 0, b"welcome")
        .expect("establish");
    let client_est = expect_se.handle(&established).expect("session_established");
    std::hint::black_box((server_est, client_est));
}

fn handshakes(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    let (client, server_id) = (Identity::generate(), Identity::generate());
    group.bench_function("snow_in_memory", |b| {
        b.iter(|| snow_handshake(&client, &server_id))
    });
    for (suite, cipher, name) in [
        (Suite::ChaChaPoly, CipherImpl::Compact, "chachapoly_compact"),
        (Suite::AesGcm, CipherImpl::Fast, "aesgcm_fast"),
    ] {
        group.bench_function(BenchmarkId::new("states_in_memory", name), |b| {
            b.iter(|| states_handshake(suite, cipher, &client, &server_id))
        });
    }

    let (url, key) = rt.block_on(async {
        let (server, listener) = Server::new(
            server_id.clone(),
            AnyKey,
            ChannelConfig::default(),
            registry("bench-hs"),
        );
        let serving = serve("127.0.0.1:0".parse().expect("addr"), &server)
            .await
            .expect("bind");
        tokio::spawn(tessera_channel::echo(listener));
        let url = format!("ws://{}/", serving.local_addr());
        std::mem::forget(serving);
        (url, server.public_key())
    });
    let connector = rt
        .block_on(async { Connector::new(registry("bench-hs-client"), ChannelConfig::default()) });
    group.bench_function("websocket_loopback", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let channel = connector
                        .connect(&url, key, &client)
                        .await
                        .expect("connect");
                    drop(channel);
                }
                started.elapsed()
            })
        })
    });
    // The same, four handshakes in flight at once: what a server sees from many clients, using both cores.
    group.bench_function("websocket_loopback_4_in_flight", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                let workers: Vec<_> = (0..4u64)
                    .map(|w| {
                        let (connector, url, client) =
                            (connector.clone(), url.clone(), client.clone());
                        tokio::spawn(async move {
                            for _ in 0..(iters / 4 + u64::from(w < iters % 4)) {
                                let channel = connector
                                    .connect(&url, key, &client)
                                    .await
                                    .expect("connect");
                                drop(channel);
                            }
                        })
                    })
                    .collect();
                for w in workers {
                    w.await.expect("worker");
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

/// snow alone: one sender, one receiver, the channel's fragmentation, no I/O.
struct SnowPipe {
    sender: StatelessTransportState,
    receiver: StatelessTransportState,
    nonce: u64,
    scratch: Vec<u8>,
    out: Vec<u8>,
    plain: Vec<u8>,
}

impl SnowPipe {
    fn new((sender, receiver): (StatelessTransportState, StatelessTransportState)) -> Self {
        SnowPipe {
            sender,
            receiver,
            nonce: 0,
            scratch: Vec::new(),
            out: vec![0u8; 65_535],
            plain: vec![0u8; 65_535],
        }
    }

    fn send(&mut self, message: &[u8]) {
        let mut chunks = message.chunks(MAX_FRAGMENT).peekable();
        while let Some(chunk) = chunks.next() {
            self.scratch.clear();
            self.scratch.push(if chunks.peek().is_some() {
                TYPE_DATA_MORE
            } else {
                TYPE_DATA
            });
            self.scratch.extend_from_slice(chunk);
            let n = self
                .sender
                .write_message(self.nonce, &self.scratch, &mut self.out)
                .expect("encrypt");
            self.receiver
                .read_message(self.nonce, &self.out[..n], &mut self.plain)
                .expect("decrypt");
            self.nonce += 1;
        }
    }
}

/// A sink server: counts messages; an empty message asks for an acknowledgement. Returns its URL and key.
fn sink(
    rt: &tokio::runtime::Runtime,
    server_id: &Identity,
    config: ChannelConfig,
) -> (String, tessera_channel::PublicKey) {
    rt.block_on(async {
        let (server, mut listener) =
            Server::new(server_id.clone(), AnyKey, config, registry("bench-tx"));
        let serving = serve("127.0.0.1:0".parse().expect("addr"), &server)
            .await
            .expect("bind");
        // A sink: counts messages; an empty message asks for an acknowledgement.
        tokio::spawn(async move {
            while let Some(channel) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut reader, writer) = channel.split();
                    while let Ok(Some(m)) = reader.recv().await {
                        if m.is_empty() && writer.send(&b"ack"[..]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let url = format!("ws://{}/", serving.local_addr());
        std::mem::forget(serving);
        (url, server.public_key())
    })
}

fn transport(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let (client, server_id) = (Identity::generate(), Identity::generate());
    // The default channel (version 1, ChaCha20-Poly1305 on RustCrypto), and version 2 (AES-256-GCM) on
    // ring at both ends, as the TEE services run it.
    let fast = ChannelConfig {
        suite: Suite::AesGcm,
        cipher: tessera_channel::CipherImpl::Fast,
        ..ChannelConfig::default()
    };
    let mut channels = Vec::new();
    for config in [ChannelConfig::default(), fast] {
        let (url, key) = sink(rt, &server_id, config.clone());
        let connector = rt.block_on(async { Connector::new(registry("bench-tx-client"), config) });
        let channel = rt
            .block_on(connector.connect(&url, key, &client))
            .expect("connect");
        channels.push(channel);
    }

    for size in [100usize, 1024, 64 * 1024] {
        let mut group = c.benchmark_group(format!("transport/{size}"));
        group.throughput(Throughput::Bytes(size as u64));
        let message = bytes::Bytes::from(vec![0x5au8; size]);
        let mut pipe = SnowPipe::new(snow_handshake(&client, &server_id));
        group.bench_function(BenchmarkId::new("snow_in_memory", size), |b| {
            b.iter(|| pipe.send(&message))
        });
        let mut pipe = SnowPipe::new(snow_handshake_with(
            Suite::AesGcm,
            true,
            &client,
            &server_id,
        ));
        group.bench_function(BenchmarkId::new("snow_in_memory_aesgcm_ring", size), |b| {
            b.iter(|| pipe.send(&message))
        });
        for (name, channel) in ["websocket_loopback", "websocket_loopback_aesgcm_ring"]
            .into_iter()
            .zip(channels.iter_mut())
        {
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iters {
                            channel.send(message.clone()).await.expect("send");
                        }
                        channel.send(bytes::Bytes::new()).await.expect("marker");
                        let ack = channel.recv().await.expect("ack").expect("open");
                        assert_eq!(&ack[..], b"ack");
                        started.elapsed()
                    })
                })
            });
        }
        group.finish();
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    handshakes(c, &rt);
    transport(c, &rt);
}

criterion_group! {
    name = channel;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(20);
    targets = benches
}
criterion_main!(channel);
