//! Load generator for the relay (issue 7, item 10), with a plain axum WebSocket echo server measured in
//! the same run as the ceiling. Run: `cargo run --release -p tessera-relay --example relay_load`
//! (`-- --quick` for a short run). Results go to stdout as a Markdown table for BENCHMARKS.md.
//!
//! Each server runs as a child process of this binary (`relay_load serve-relay DIR`,
//! `relay_load serve-echo`) so its memory can be read from /proc (VmRSS) and the two are measured alike.
//!
//! * Online delivery, N online clients: N/2 senders each send one message after another (waiting for
//!   the relay's `sent`, i.e. until the copy is durable in SQLite), each to its own receiver among the
//!   other N/2, which acknowledge in batches of 64. Messages/s = deliveries received per second;
//!   latency = send start to receipt. Ciphertexts are opaque 200-byte strings: this measures the
//!   relay, not Olm (which runs on the clients).
//! * Echo ceiling, N clients: each sends a 200-byte message and waits for its echo, one after another.
//! * Offline store rate: N/2 senders to receivers that are not connected.
//! * Server CPU per message: the server process's user + system time (`/proc/PID/stat`) in the timed
//!   window over the messages in it — a measure of work that what else runs on the machine disturbs
//!   less than the rates. Clients' CPU per message: this process's time in the same window (the
//!   clients run here, on the same cores); the CPU-bound rate is cores × 1 s over the two together —
//!   the rate the machine could carry at that cost per message.
//! * Memory per idle client: RSS of the server process with N connected idle clients (each has done one
//!   ping round trip) minus its RSS before, divided by N. Idle clients here are not registered.
//! * Most idle clients: connect more until a connection fails or the cap (loopback has ~28,000 ephemeral
//!   ports per destination) is reached; the file-descriptor limit is raised first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tessera_channel::{AnyKey, ChannelConfig, Connector, Identity, PublicKey, Server, serve};
use tessera_relay::client::RelayClient;
use tessera_relay::client::new_message_id;
use tessera_relay::protocol::Envelope;
use tessera_relay::server::{Relay, RelayConfig};
use tessera_relay::store::SqliteStore;
use tessera_session::{Registry, RegistryConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const MESSAGE: usize = 200;
const BUFFER: usize = 4 * 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    raise_fd_limit(200_000);
    let runtime = tokio::runtime::Runtime::new()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve-relay") => runtime.block_on(serve_relay(args.get(1).cloned())),
        Some("serve-echo") => runtime.block_on(serve_echo()),
        _ => runtime.block_on(bench(args.iter().any(|a| a == "--quick"))),
    }
}

/// Raises the soft (and, as root, the hard) limit on open files; the servers' children inherit it.
fn raise_fd_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: want.max(limit.rlim_cur),
            rlim_max: want.max(limit.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_cur
}

fn big_registry(name: &'static str) -> Registry {
    Registry::new(RegistryConfig {
        max_sessions: 200_000,
        max_age: None,
        idle_timeout: Duration::from_secs(600),
        ..RegistryConfig::new(name)
    })
}

async fn serve_relay(dir: Option<String>) -> Result<(), Error> {
    let dir = std::path::PathBuf::from(dir.ok_or("serve-relay DIR")?);
    let store = SqliteStore::open(dir.join("relay.db")).await?;
    let identity = Identity::generate();
    let key = identity.public_key();
    let channel = ChannelConfig {
        ws_read_buffer: BUFFER,
        ws_write_buffer: BUFFER,
        ..ChannelConfig::default()
    };
    let (server, listener) = Server::new(identity, AnyKey, channel, big_registry("relay"));
    let serving = serve(([127, 0, 0, 1], 0).into(), &server).await?;
    // The benchmark's clients send as fast as they can: the per-connection rate limit is lifted.
    let config = RelayConfig {
        requests_per_second: 1e9,
        request_burst: 1_000_000,
        idle_timeout: Duration::from_secs(600),
        ..RelayConfig::default()
    };
    println!("ready ws://{}/ {key}", serving.local_addr());
    Relay::new(store, config).run(listener).await;
    Ok(())
}

async fn serve_echo() -> Result<(), Error> {
    use axum::extract::ws::{WebSocket, WebSocketUpgrade};
    async fn echo(mut socket: WebSocket) {
        while let Some(Ok(message)) = socket.recv().await {
            if socket.send(message).await.is_err() {
                return;
            }
        }
    }
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|ws: WebSocketUpgrade| async move {
            ws.read_buffer_size(BUFFER)
                .write_buffer_size(BUFFER)
                .on_upgrade(echo)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("ready ws://{}/ -", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

struct Child_ {
    child: Child,
    url: String,
    key: Option<PublicKey>,
}

/// CPU time (user + system) a process has used so far, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) end with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

impl Child_ {
    fn cpu_ticks(&self) -> u64 {
        self.child.id().map(cpu_ticks).unwrap_or(0)
    }

    fn rss_kib(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

async fn spawn(args: &[&str]) -> Result<Child_, Error> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("stdout")?)
        .read_line(&mut line)
        .await?;
    let mut words = line.split_whitespace().skip(1);
    let url = words.next().ok_or("no url")?.to_owned();
    let key = words.next().and_then(|k| k.parse().ok());
    Ok(Child_ { child, url, key })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
}

struct Run {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The server process's CPU time (user + system) per message in the timed window, µs: less
    /// sensitive than the rate to what else runs on the machine.
    cpu_us: f64,
    /// This process's CPU time per message in the same window, µs: the clients' share of the machine
    /// (they run here, on the same cores as the server).
    client_cpu_us: f64,
}

impl Run {
    /// The most messages/s the machine's cores could carry at this run's CPU cost per message (server
    /// and clients together): what the rate is bound by when the cores, not waiting, are the limit.
    fn cpu_bound_rate(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        cores * 1e6 / (self.cpu_us + self.client_cpu_us).max(f64::MIN_POSITIVE)
    }
}

/// CPU ticks of the server (first) and of this process (the clients) so far.
fn both_ticks(server: &Child_) -> (u64, u64) {
    (server.cpu_ticks(), cpu_ticks(std::process::id()))
}

fn summarize(
    count: u64,
    elapsed: Duration,
    mut latencies: Vec<u64>,
    (start, end): ((u64, u64), (u64, u64)),
) -> Run {
    latencies.sort_unstable();
    let per_message = |ticks: u64| ticks as f64 / ticks_per_second() * 1e6 / count.max(1) as f64;
    Run {
        rate: count as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        cpu_us: per_message(end.0.saturating_sub(start.0)),
        client_cpu_us: per_message(end.1.saturating_sub(start.1)),
    }
}

async fn echo_run(server: &Child_, clients: usize, duration: Duration) -> Result<Run, Error> {
    let mut sockets = Vec::with_capacity(clients);
    // The same WebSocket buffers as the relay's clients (tungstenite's default read buffer, zero-filled
    // before every read, made these clients — not the server — the bottleneck).
    let config = ChannelConfig::default().websocket_config();
    for _ in 0..clients {
        let (socket, _) =
            tokio_tungstenite::connect_async_with_config(&server.url, Some(config), false).await?;
        sockets.push(socket);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let cpu_start = both_ticks(server);
    let mut tasks = Vec::new();
    for mut socket in sockets {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let payload = "x".repeat(MESSAGE);
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let message = tokio_tungstenite::tungstenite::Message::text(payload.clone());
                if socket.send(message).await.is_err() {
                    break;
                }
                match socket.next().await {
                    Some(Ok(_)) => latencies.push(sent.elapsed().as_micros() as u64),
                    _ => break,
                }
            }
            let _ = socket.close(None).await;
            latencies
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let cpu = (cpu_start, both_ticks(server));
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    Ok(summarize(latencies.len() as u64, elapsed, latencies, cpu))
}

struct RelayClients {
    senders: Vec<(RelayClient, String)>,
    receivers: Vec<(RelayClient, Identity)>,
}

fn connector() -> Connector {
    Connector::new(big_registry("load"), ChannelConfig::default())
}

/// Registers `pairs` senders and receivers; receivers stay connected when `online`.
async fn relay_clients(
    server: &Child_,
    pairs: usize,
    online: bool,
    tag: &str,
) -> Result<RelayClients, Error> {
    let key = server.key.ok_or("no relay key")?;
    let connector = connector();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..pairs {
        let receiver = Identity::generate();
        let mut client = RelayClient::new(connector.connect(&server.url, key, &receiver).await?);
        client.register(&format!("{tag}r{i}"), "ik", "sk").await?;
        if online {
            receivers.push((client, receiver));
        } else {
            client.close().await;
        }
        let sender = Identity::generate();
        let mut client = RelayClient::new(connector.connect(&server.url, key, &sender).await?);
        client.register(&format!("{tag}s{i}"), "ik", "sk").await?;
        senders.push((client, format!("{tag}r{i}")));
    }
    Ok(RelayClients { senders, receivers })
}

fn now_micros(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64
}

async fn relay_run(
    server: &Child_,
    clients: usize,
    duration: Duration,
    online: bool,
    tag: &str,
) -> Result<Run, Error> {
    let pairs = (clients / 2).max(1);
    let RelayClients { senders, receivers } = relay_clients(server, pairs, online, tag).await?;
    let device_of: Vec<String> = if online {
        receivers
            .iter()
            .map(|(_, id)| id.public_key().to_string())
            .collect()
    } else {
        Vec::new()
    };
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sent_total = Arc::new(AtomicU64::new(0));
    let mut receiving = Vec::new();
    for (mut client, _) in receivers {
        let stop = stop.clone();
        receiving.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut batch = Vec::new();
            loop {
                let next =
                    tokio::time::timeout(Duration::from_millis(500), client.next_delivery()).await;
                let delivery = match next {
                    Ok(Ok(delivery)) => delivery,
                    Ok(Err(_)) => break,
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => continue,
                };
                if let Some((stamp, _)) = delivery.ciphertext.split_once(':')
                    && let Ok(stamp) = stamp.parse::<u64>()
                    && !stop.load(Ordering::Relaxed)
                {
                    latencies.push(now_micros(origin).saturating_sub(stamp));
                }
                batch.push(delivery.reference());
                if batch.len() >= 64 && client.ack(std::mem::take(&mut batch)).await.is_err() {
                    break;
                }
            }
            client.close().await;
            latencies
        }));
    }
    let start = Instant::now();
    let cpu_start = both_ticks(server);
    let mut sending = Vec::new();
    for (index, (mut client, to)) in senders.into_iter().enumerate() {
        let stop = stop.clone();
        let sent_total = sent_total.clone();
        let device = device_of.get(index).cloned();
        let to_device = match device {
            Some(d) => d,
            None => {
                // Offline receivers: look the device up once.
                let bundle = client.fetch_bundle(&to).await?;
                bundle
                    .first()
                    .map(|b| b.device.clone())
                    .ok_or("no device")?
            }
        };
        sending.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let stamp = now_micros(origin);
                let mut ciphertext = format!("{stamp}:");
                ciphertext.extend(std::iter::repeat_n('c', MESSAGE - ciphertext.len()));
                let envelope = Envelope {
                    device: to_device.clone(),
                    ciphertext,
                };
                let id = new_message_id();
                if client.send(&id, &to, vec![envelope]).await.is_err() {
                    break;
                }
                acked.push(now_micros(origin).saturating_sub(stamp));
                sent_total.fetch_add(1, Ordering::Relaxed);
            }
            client.close().await;
            acked
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let cpu = (cpu_start, both_ticks(server));
    let mut send_latencies = Vec::new();
    for task in sending {
        send_latencies.extend(task.await?);
    }
    let mut latencies = Vec::new();
    for task in receiving {
        latencies.extend(task.await?);
    }
    if !online {
        // Offline: the latency is the sender's, until the relay says the copy is durable.
        latencies = send_latencies;
    }
    let count = if online {
        latencies.len() as u64
    } else {
        sent_total.load(Ordering::Relaxed)
    };
    Ok(summarize(count, elapsed, latencies, cpu))
}

/// Connects idle clients (each does one ping round trip) until `target`; returns them.
async fn idle_clients(
    server: &Child_,
    target: usize,
    held: &mut Vec<RelayClient>,
    connector: &Connector,
) -> Result<(), Error> {
    let key = server.key.ok_or("no relay key")?;
    while held.len() < target {
        let batch = (target - held.len()).min(200);
        let mut joins = Vec::with_capacity(batch);
        for _ in 0..batch {
            let connector = connector.clone();
            let url = server.url.clone();
            joins.push(tokio::spawn(async move {
                let identity = Identity::generate();
                // A server whose accept queue is full closes new channels with 1013 (try again
                // later): a client retries.
                let mut tries = 0;
                loop {
                    let attempt = async {
                        let channel = connector.connect(&url, key, &identity).await?;
                        let mut client = RelayClient::new(channel);
                        client.ping().await?;
                        Ok::<_, Error>(client)
                    };
                    match attempt.await {
                        Ok(client) => break Ok(client),
                        Err(error) if tries < 5 && error.to_string().contains("1013") => tries += 1,
                        Err(error) => break Err(error),
                    }
                }
            }));
        }
        let mut failed = None;
        for join in joins {
            match join.await? {
                Ok(client) => held.push(client),
                Err(error) => failed = Some(error),
            }
        }
        if let Some(error) = failed {
            return Err(error);
        }
    }
    Ok(())
}

async fn echo_idle(url: &str, count: usize) -> Result<Vec<impl Sized>, Error> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
        socket
            .send(tokio_tungstenite::tungstenite::Message::text("ping"))
            .await?;
        socket.next().await.ok_or("echo closed")??;
        sockets.push(socket);
    }
    Ok(sockets)
}

async fn bench(quick: bool) -> Result<(), Error> {
    let duration = Duration::from_secs(if quick { 2 } else { 6 });
    let idle = if quick { 1_000 } else { 5_000 };
    let cap = if quick { 2_000 } else { 25_000 };
    let dir = tempfile::tempdir()?;
    let dir_arg = dir.path().to_string_lossy().into_owned();
    println!("fd limit: {}", fd_limit());

    println!(
        "\n| test | clients | messages/s | p50 ms | p99 ms | ratio to echo | server CPU µs/message | clients' CPU µs/message | CPU-bound rate |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let echo = spawn(&["serve-echo"]).await?;
    let relay = spawn(&["serve-relay", &dir_arg]).await?;
    for clients in [100usize, 1000] {
        let ceiling = echo_run(&echo, clients, duration).await?;
        println!(
            "| echo (axum, 4 KiB buffers) | {clients} | {:.0} | {:.2} | {:.2} | 1.00 | {:.1} | {:.1} | {:.0} |",
            ceiling.rate,
            ceiling.p50_ms,
            ceiling.p99_ms,
            ceiling.cpu_us,
            ceiling.client_cpu_us,
            ceiling.cpu_bound_rate()
        );
        let tag = format!("on{clients}");
        let online = relay_run(&relay, clients, duration, true, &tag).await?;
        println!(
            "| relay online delivery | {clients} | {:.0} | {:.2} | {:.2} | {:.3} | {:.1} | {:.1} | {:.0} |",
            online.rate,
            online.p50_ms,
            online.p99_ms,
            online.rate / ceiling.rate,
            online.cpu_us,
            online.client_cpu_us,
            online.cpu_bound_rate()
        );
    }
    let offline = relay_run(&relay, 100, duration, false, "off").await?;
    println!(
        "| relay offline store (50 senders; latency = send to durable `sent`) | 100 | {:.0} | {:.2} | {:.2} | — | {:.1} | {:.1} | {:.0} |",
        offline.rate,
        offline.p50_ms,
        offline.p99_ms,
        offline.cpu_us,
        offline.client_cpu_us,
        offline.cpu_bound_rate()
    );
    println!(
        "\nload average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    drop(relay);
    drop(echo);

    // Memory per idle client: fresh server processes.
    let echo = spawn(&["serve-echo"]).await?;
    let before = echo.rss_kib();
    let sockets = echo_idle(&echo.url, idle).await?;
    let after = echo.rss_kib();
    let echo_per = (after.saturating_sub(before)) as f64 * 1024.0 / idle as f64;
    drop(sockets);
    drop(echo);

    let dir2 = tempfile::tempdir()?;
    let dir2_arg = dir2.path().to_string_lossy().into_owned();
    let relay = spawn(&["serve-relay", &dir2_arg]).await?;
    let connector = connector();
    let mut held = Vec::new();
    let before = relay.rss_kib();
    idle_clients(&relay, idle, &mut held, &connector).await?;
    let after = relay.rss_kib();
    let relay_per = (after.saturating_sub(before)) as f64 * 1024.0 / idle as f64;
    println!(
        "\n| server | idle clients | RSS before KiB | RSS after KiB | bytes per idle client |"
    );
    println!("|---|---|---|---|---|");
    println!("| echo (axum, 4 KiB buffers) | {idle} | — | — | {echo_per:.0} |");
    println!("| relay | {idle} | {before} | {after} | {relay_per:.0} |");

    let started = Instant::now();
    let outcome = idle_clients(&relay, cap, &mut held, &connector).await;
    println!(
        "\nmost idle clients held: {} (target {cap}; {}), relay RSS {} KiB, {:.1} s",
        held.len(),
        match &outcome {
            Ok(()) => "reached".to_owned(),
            Err(error) => format!("stopped: {error}"),
        },
        relay.rss_kib(),
        started.elapsed().as_secs_f64()
    );
    drop(held);
    drop(relay);
    Ok(())
}
