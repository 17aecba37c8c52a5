//! Load generator for the relay's SQLite store alone (no channel, no JSON): concurrent senders enqueue
//! 200-byte ciphertexts, each to a receiver of its own, and the receivers' acks (batches of 64) follow
//! as the relay's would. Prints sends/s and the process's CPU time per send (user + system, both
//! threads of the current-thread runtime and sqlx's SQLite worker), which is steadier than the rate
//! on a shared machine. Run: `cargo run --release -p tessera-relay --example store_load [-- SENDERS
//! SECONDS]`.

use std::time::{Duration, Instant};

use tessera_relay::client::new_message_id;
use tessera_relay::protocol::{Envelope, MessageRef};
use tessera_relay::store::{Admission, Registration, SqliteStore, Store};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let senders = args.first().copied().unwrap_or(50) as usize;
    let seconds = args.get(1).copied().unwrap_or(4);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(senders, Duration::from_secs(seconds)))
}

fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes the struct passed by pointer.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

async fn run(senders: usize, duration: Duration) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("relay.db")).await?;
    let open = Admission {
        invite_only: false,
        token_hash: None,
    };
    for i in 0..senders * 2 {
        let device = format!("{i:064x}");
        let username = format!("user{i}");
        let registration = Registration {
            username: &username,
            device: &device,
            identity_key: "identity",
            signing_key: "signing",
        };
        store.register_device(&registration, &open).await?;
    }
    let ciphertext = "c".repeat(200);
    let stop = Instant::now() + duration;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for s in 0..senders {
        let store = store.clone();
        let count = count.clone();
        let ciphertext = ciphertext.clone();
        tasks.spawn(async move {
            let sender = format!("{s:064x}");
            let receiver = format!("{:064x}", s + senders);
            let to = format!("user{}", s + senders);
            let mut unacked = Vec::new();
            let mut sent = 0u64;
            while Instant::now() < stop {
                // Ids as the client library makes them (time first).
                let message_id = new_message_id();
                let envelopes = [Envelope {
                    device: receiver.clone(),
                    ciphertext: ciphertext.clone(),
                }];
                let stored = store.enqueue(&sender, &message_id, &to, &envelopes).await?;
                sent += 1;
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let seq = stored.copies().first().map_or(0, |(_, seq)| *seq);
                unacked.push(MessageRef {
                    from_device: sender.clone(),
                    message_id,
                    seq,
                });
                if unacked.len() == 64 {
                    store.ack(&receiver, &std::mem::take(&mut unacked)).await?;
                }
            }
            Ok::<u64, Error>(sent)
        });
    }
    let mut total = 0;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    let (mut last_cpu, mut last_sends) = (cpu_before, 0u64);
    loop {
        tokio::select! {
            result = tasks.join_next() => match result {
                Some(result) => total += result??,
                None => break,
            },
            _ = ticks.tick() => {
                let (cpu, sends) = (cpu_seconds(), count.load(std::sync::atomic::Ordering::Relaxed));
                println!("  {:>3.0} s: {} sends, CPU {:.1} µs per send", started.elapsed().as_secs_f64(), sends - last_sends, (cpu - last_cpu) * 1e6 / (sends - last_sends).max(1) as f64);
                (last_cpu, last_sends) = (cpu, sends);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "senders {senders}: {total} sends in {elapsed:.2} s = {:.0}/s, CPU {:.1} µs per send",
        total as f64 / elapsed,
        cpu * 1e6 / total as f64
    );
    Ok(())
}
