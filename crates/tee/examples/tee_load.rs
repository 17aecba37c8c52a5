//! Load generator for the TEE services (issue 8's benchmark): end-to-end prove time and bytes exchanged for
//! 1 KB, 100 KB and 1 MB responses beside a plain rustls HTTPS GET of the same page in the same run (the
//! ceiling), and concurrent proofs per second beside concurrent plain GETs.
//!
//! Everything runs on loopback in this process: a local HTTPS site (rustls, a fresh test CA, a thread per
//! connection), TEE_K and TEE_T as services, and the clients. Bytes are counted by TCP forwarders placed in
//! front of the site, TEE_K and TEE_T (and on TEE_K's link to TEE_T) in separate rounds, so that the timed
//! rounds run without the extra hop.
//!
//! `cargo run --release -p tessera-tee --example tee_load` (`-- --quick` for fewer rounds, `-- --size 1024`
//! for one response size in KB, `-- --malloc-default` for glibc's allocator defaults instead of the policy
//! the `tessera` TEE commands run with).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tessera_channel::Identity;
use tessera_tee::RootStore;
use tessera_tee::service::{
    ProveRequest, Prover, Reveal, TeeEndpoint, TeeK, TeeKConfig, TeeT, TeeTConfig, prove,
};
use tessera_tee::signing::Signer;
use tessera_tee::verify::{VerifierConfig, verify_bundle};

const HOST: &str = "bench.tessera.test";

struct Pki {
    ca_pem: String,
    leaf_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Bench CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec![HOST.to_string()]).expect("leaf params");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf cert");
    Pki {
        ca_pem: ca_cert.pem(),
        leaf_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The site: `GET /size/N` answers N bytes of JSON-ish text with a Content-Length, then close_notify.
fn site(pki: &Pki) -> SocketAddr {
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(pki.leaf_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der.clone())),
            )
            .expect("server config"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind site");
    let addr = listener.local_addr().expect("site addr");
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let config = config.clone();
            std::thread::spawn(move || serve(config, tcp));
        }
    });
    addr
}

fn serve(config: Arc<rustls::ServerConfig>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.ends_with(b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let size: usize = text
        .strip_prefix("GET /size/")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Built at memory speed (a real site serves such a page from memory), so that the plain GET, the
    // ceiling, is not slowed by the body's making.
    let prefix = b"{\"id\":42,\"data\":\"";
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(&prefix[..prefix.len().min(size)]);
    let letters = b"abcdefghijklmnopqrstuvwxyz".repeat(size / 26 + 1);
    let fill = size.saturating_sub(2).saturating_sub(body.len());
    body.extend_from_slice(&letters[..fill]);
    body.extend_from_slice(&b"\"}"[..size - body.len()]);
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tls.write_all(head.as_bytes());
    let _ = tls.write_all(&body);
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// A plain rustls HTTPS GET to EOF: (body bytes, TCP bytes both ways).
fn plain_get(site: SocketAddr, roots: &rustls::RootCertStore, size: usize) -> (usize, u64) {
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
    );
    let name = ServerName::try_from(HOST).expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let tcp = Counted::new(TcpStream::connect(site).expect("connect site"));
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!(
        "GET /size/{size} HTTP/1.1\r\nHost: {HOST}:{}\r\nConnection: close\r\nAccept-Encoding: identity\r\n\r\n",
        site.port()
    );
    tls.write_all(request.as_bytes()).expect("write request");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    (response.len(), tls.sock.bytes)
}

/// A TCP stream that counts the bytes it carries both ways.
struct Counted {
    tcp: TcpStream,
    bytes: u64,
}

impl Counted {
    fn new(tcp: TcpStream) -> Self {
        let _ = tcp.set_nodelay(true);
        Counted { tcp, bytes: 0 }
    }
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.tcp.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.tcp.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// A TCP forwarder in front of `target` that counts every byte it forwards, both ways, as it goes.
async fn forwarder(target: SocketAddr, counter: Arc<AtomicU64>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind forwarder");
    let addr = listener.local_addr().expect("forwarder addr");
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::join!(
                    pump(in_read, out_write, &counter),
                    pump(out_read, in_write, &counter)
                );
            });
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: &AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

struct Tees {
    k: TeeK,
    t: TeeT,
    k_end: TeeEndpoint,
    t_end: TeeEndpoint,
}

/// TEE_K and TEE_T as services; with `link`, TEE_K reaches TEE_T through that address instead.
async fn tees(roots: RootStore, link: Option<Arc<AtomicU64>>) -> Tees {
    let k_identity = Identity::generate();
    let t = TeeT::new(TeeTConfig::new(
        Identity::generate(),
        Signer::generate(),
        Some(k_identity.public_key()),
    ));
    let t_serving = t
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("TEE_T");
    let t_addr = t_serving.local_addr();
    std::mem::forget(t_serving);
    let k_link = match link {
        Some(counter) => forwarder(t_addr, counter).await,
        None => t_addr,
    };
    let k = TeeK::new(
        TeeKConfig::new(
            k_identity,
            Signer::generate(),
            format!("ws://{k_link}/teek"),
            t.public_key(),
        )
        .with_roots(roots),
    );
    let k_serving = k
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("TEE_K");
    let k_end = TeeEndpoint::new(k_serving.local_addr().to_string(), k.public_key());
    std::mem::forget(k_serving);
    let t_end = TeeEndpoint::new(t_addr.to_string(), t.public_key());
    Tees { k, t, k_end, t_end }
}

fn request(site: SocketAddr, size: usize) -> ProveRequest {
    ProveRequest::get(&format!("https://{HOST}:{}/size/{size}", site.port()))
        .expect("request")
        .header("Cookie", "session=bench-secret")
        .hide_header("Cookie")
        .reveal(Reveal::JsonPath("$.id".into()))
        .connect_to(site)
        .timeout(Duration::from_secs(120))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU time of this whole process (every thread: the site, both TEEs and the clients), in ms.
fn cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

fn summary(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 50.0), percentile(&ms, 90.0))
}

/// The allocator policy `tessera tee-k`, `tee-t` and `prove` run with (crates/tessera/src/memory.rs):
/// allocations up to 32 MiB from glibc's heap, up to 64 MiB of freed memory kept. `--malloc-default`
/// leaves glibc's defaults, to measure what the policy is worth.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: called before any thread starts; parameters and values as glibc documents them.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20) == 1
        };
        assert!(ok, "mallopt");
    }
}

fn main() {
    let malloc_default = std::env::args().any(|a| a == "--malloc-default");
    if !malloc_default {
        keep_freed_memory();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(malloc_default));
}

async fn run(malloc_default: bool) {
    // RUST_LOG=tessera_tee::service::client=debug prints each proof's stage timings.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let pki = pki();
    let site_addr = site(&pki);
    let roots = RootStore::from_pem(pki.ca_pem.as_bytes()).expect("roots");
    let mut plain_roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        plain_roots.add(cert.expect("CA pem")).expect("CA");
    }
    let plain_roots = Arc::new(plain_roots);
    let direct = tees(roots.clone(), None).await;
    let verifier = VerifierConfig::new(direct.k.signer_address(), direct.t.signer_address());

    println!(
        "# tee_load ({}, allocator: {})",
        if quick { "quick" } else { "full" },
        if malloc_default {
            "glibc defaults"
        } else {
            "freed memory kept"
        }
    );
    println!(
        "| response | plain GET p50 / p90 ms | prove p50 / p90 ms | time ratio (p50) | prove on kept channels p50 ms (ratio) | CPU ms per plain GET / proof (ratio) | plain bytes | prove bytes (client-site, client-K, client-T, K-T) | bytes / response |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // `--size KB` measures one response size only (e.g. `--size 1024` for a profile of 1 MB proofs), and
    // not the concurrent clients.
    let only: Option<usize> = std::env::args()
        .skip_while(|a| a != "--size")
        .nth(1)
        .and_then(|kb| kb.parse().ok());
    // `--rounds N` overrides the number of timed rounds per size.
    let rounds_arg: Option<usize> = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|n| n.parse().ok());
    for (size, rounds) in [(1_024usize, 30usize), (100 * 1024, 20), (1024 * 1024, 10)] {
        if only.is_some_and(|kb| kb * 1024 != size) {
            continue;
        }
        let rounds = if quick { rounds.div_ceil(5) } else { rounds };
        let rounds = rounds_arg.unwrap_or(rounds);
        // Warm-up: one of each.
        let r = plain_roots.clone();
        tokio::task::spawn_blocking(move || plain_get(site_addr, &r, size))
            .await
            .expect("plain");
        prove(&request(site_addr, size), &direct.k_end, &direct.t_end)
            .await
            .expect("warm-up proof");
        let mut plain_ms = Vec::new();
        let mut prove_ms = Vec::new();
        let mut plain_bytes = 0;
        let (mut plain_cpu, mut prove_cpu) = (0.0, 0.0);
        // A client that keeps its channels between proofs (one warm-up proof opens them).
        let mut prover = Prover::new(direct.k_end.clone(), direct.t_end.clone());
        prover
            .prove(&request(site_addr, size))
            .await
            .expect("warm-up proof, kept channels");
        let mut kept_ms = Vec::new();
        for _ in 0..rounds {
            // Interleaved, so both see the same machine.
            let r = plain_roots.clone();
            let cpu = cpu_ms();
            let start = Instant::now();
            let (got, bytes) = tokio::task::spawn_blocking(move || plain_get(site_addr, &r, size))
                .await
                .expect("plain");
            plain_ms.push(start.elapsed().as_secs_f64() * 1e3);
            plain_cpu += cpu_ms() - cpu;
            assert!(got > size, "short plain response: {got}");
            plain_bytes = bytes;
            let cpu = cpu_ms();
            let start = Instant::now();
            let proved = prove(&request(site_addr, size), &direct.k_end, &direct.t_end)
                .await
                .expect("proof");
            prove_ms.push(start.elapsed().as_secs_f64() * 1e3);
            prove_cpu += cpu_ms() - cpu;
            assert!(proved.response.len() > size);
            let start = Instant::now();
            let proved = prover
                .prove(&request(site_addr, size))
                .await
                .expect("proof, kept channels");
            kept_ms.push(start.elapsed().as_secs_f64() * 1e3);
            assert!(proved.response.len() > size);
        }
        prover.close().await;
        // The last proof verifies (outside the timing).
        let proved = prove(&request(site_addr, size), &direct.k_end, &direct.t_end)
            .await
            .expect("proof");
        verify_bundle(&proved.bundle, &verifier).expect("the proof verifies");

        // Bytes: one proof through counting forwarders.
        let counters: [Arc<AtomicU64>; 4] = Default::default();
        let counted = tees(roots.clone(), Some(counters[3].clone())).await;
        let site_fwd = forwarder(site_addr, counters[0].clone()).await;
        let k_fwd = forwarder(
            counted
                .k_end
                .url
                .trim_start_matches("ws://")
                .trim_end_matches("/ws")
                .parse()
                .expect("K addr"),
            counters[1].clone(),
        )
        .await;
        let t_fwd = forwarder(
            counted
                .t_end
                .url
                .trim_start_matches("ws://")
                .trim_end_matches("/ws")
                .parse()
                .expect("T addr"),
            counters[2].clone(),
        )
        .await;
        let k_end = TeeEndpoint::new(k_fwd.to_string(), counted.k.public_key());
        let t_end = TeeEndpoint::new(t_fwd.to_string(), counted.t.public_key());
        prove(
            &request(site_addr, size).connect_to(site_fwd),
            &k_end,
            &t_end,
        )
        .await
        .expect("counted proof");
        counted.k.shutdown(Duration::from_secs(1)).await;
        counted.t.shutdown(Duration::from_secs(1)).await;
        let parts: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = parts.iter().sum();
        let (plain_p50, plain_p90) = summary(plain_ms);
        let (prove_p50, prove_p90) = summary(prove_ms);
        let (kept_p50, _) = summary(kept_ms);
        println!(
            "| {} | {plain_p50:.2} / {plain_p90:.2} | {prove_p50:.2} / {prove_p90:.2} | {:.2}x | {kept_p50:.2} ({:.2}x) | {:.2} / {:.2} ({:.2}x) | {plain_bytes} | {total} ({}, {}, {}, {}) | {:.2}x |",
            human(size),
            prove_p50 / plain_p50,
            kept_p50 / plain_p50,
            plain_cpu / rounds as f64,
            prove_cpu / rounds as f64,
            prove_cpu / plain_cpu,
            parts[0],
            parts[1],
            parts[2],
            parts[3],
            total as f64 / size as f64
        );
    }

    if only.is_some() {
        return;
    }
    // Concurrency: 20 clients at once, each proving (or fetching) 1 KB pages back to back.
    let clients = 20;
    let per_client = if quick { 3 } else { 10 };
    let start = Instant::now();
    let mut fetches = Vec::new();
    for _ in 0..clients {
        let r = plain_roots.clone();
        fetches.push(tokio::task::spawn_blocking(move || {
            for _ in 0..per_client {
                plain_get(site_addr, &r, 1024);
            }
        }));
    }
    for f in fetches {
        f.await.expect("plain client");
    }
    let plain_rate = (clients * per_client) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut proofs = Vec::new();
    for _ in 0..clients {
        let (k, t) = (direct.k_end.clone(), direct.t_end.clone());
        proofs.push(tokio::spawn(async move {
            for _ in 0..per_client {
                prove(&request(site_addr, 1024), &k, &t)
                    .await
                    .expect("concurrent proof");
            }
        }));
    }
    for p in proofs {
        p.await.expect("proving client");
    }
    let prove_rate = (clients * per_client) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut provers = Vec::new();
    for _ in 0..clients {
        let (k, t) = (direct.k_end.clone(), direct.t_end.clone());
        provers.push(tokio::spawn(async move {
            let mut prover = Prover::new(k, t);
            for _ in 0..per_client {
                prover
                    .prove(&request(site_addr, 1024))
                    .await
                    .expect("concurrent proof, kept channels");
            }
            prover.close().await;
        }));
    }
    for p in provers {
        p.await.expect("proving client");
    }
    let kept_rate = (clients * per_client) as f64 / start.elapsed().as_secs_f64();
    println!();
    println!(
        "| {clients} concurrent clients, 1 KB | plain GETs/s {plain_rate:.0} | proofs/s {prove_rate:.0} | ratio {:.2} | proofs/s on kept channels {kept_rate:.0} | ratio {:.2} |",
        prove_rate / plain_rate,
        kept_rate / plain_rate
    );
    direct.k.shutdown(Duration::from_secs(2)).await;
    direct.t.shutdown(Duration::from_secs(2)).await;
    println!(
        "sessions left: TEE_K {}, TEE_T {}",
        direct.k.sessions().len(),
        direct.t.sessions().len()
    );
}

fn human(size: usize) -> String {
    if size >= 1024 * 1024 {
        format!("{} MB", size / (1024 * 1024))
    } else {
        format!("{} KB", size / 1024)
    }
}
