//! The tables after the main one: memory, start-up, and our proxy against the best peer per case.

use std::time::Duration;

use crate::load::Row;

pub fn idle(n: usize, before_kb: u64, with_kb: u64) {
    println!(
        "\n`tessera mcp serve --upstream` (fast): RSS {:.1} MB at start, {:.1} MB with {n} idle sessions\n",
        before_kb as f64 / 1024.0,
        with_kb as f64 / 1024.0
    );
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

pub fn summary(rows: &[Row], startups: &[(String, Duration)]) {
    println!(
        "\nMemory (resident; the proxy's own processes, and the upstream servers it started):\n"
    );
    println!(
        "| path | proxy | upstream | sessions | proxy MB before | proxy MB with sessions | proxy MB per session | upstream MB | upstream MB per session |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows.iter().filter(|r| r.sessions > 1) {
        let (Some((before, with)), Some(upstream)) = (row.rss_kb, row.upstream_rss_kb) else {
            continue;
        };
        let n = row.sessions as u64;
        println!(
            "| {} | {} | {} | {n} | {} | {} | {} | {} | {} |",
            row.path,
            row.proxy,
            row.upstream,
            mb(before),
            mb(with),
            mb(with.saturating_sub(before) / n),
            mb(upstream),
            mb(upstream / n)
        );
    }

    cpu_split(rows);

    println!("\nStart-up, spawn to the port accepting connections:\n");
    println!("| what | ms |");
    println!("|---|---|");
    for (what, took) in startups {
        println!("| {what} | {:.1} |", took.as_secs_f64() * 1000.0);
    }

    println!("\nOurs against the best peer and the direct path (same upstream, same sessions):\n");
    println!(
        "| path | upstream | sessions | added p50 µs (ours) | added p50 % | CPU µs/req ours / best peer | ratio | req/s ours / best peer | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for ours in rows.iter().filter(|r| r.proxy == "tessera") {
        let same = |r: &&Row| {
            r.path == ours.path && r.upstream == ours.upstream && r.sessions == ours.sessions
        };
        let peers: Vec<&Row> = rows
            .iter()
            .filter(same)
            .filter(|r| r.proxy != "tessera" && r.proxy != "direct")
            .collect();
        // The reference: the same server talked to directly over the proxy's upstream transport (the
        // server's stdio for http→stdio, with one session only; its HTTP for the HTTP upstreams).
        let (direct_path, sessions) = match ours.path.as_str() {
            "stdio" => ("stdio", ours.sessions),
            "http→stdio" => ("stdio", 1),
            _ => ("http", ours.sessions),
        };
        let direct = rows.iter().find(|r| {
            r.proxy == "direct"
                && r.path == direct_path
                && r.upstream == ours.upstream
                && r.sessions == sessions
                && ours.sessions == sessions
        });
        let (added, added_pct) = direct.map_or(("—".into(), "—".into()), |d| {
            let (o, d) = (ours.percentile(0.5) as f64, d.percentile(0.5) as f64);
            (
                format!("{:.0}", o - d),
                format!("{:.0}%", (o - d) / d.max(1.0) * 100.0),
            )
        });
        let best_cpu = peers
            .iter()
            .filter_map(|r| r.cpu_per_request())
            .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.min(c))));
        let best_rate = peers
            .iter()
            .map(|r| r.rate())
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        let ours_cpu = ours.cpu_per_request().unwrap_or(f64::NAN);
        let (cpu, cpu_ratio) = best_cpu.map_or(("—".into(), "—".into()), |b| {
            (
                format!("{ours_cpu:.1} / {b:.1}"),
                format!("{:.3}", ours_cpu / b),
            )
        });
        let (rate, rate_ratio) = best_rate.map_or(("—".into(), "—".into()), |b| {
            (
                format!("{:.0} / {b:.0}", ours.rate()),
                format!("{:.2}x", ours.rate() / b),
            )
        });
        println!(
            "| {} | {} | {} | {added} | {added_pct} | {cpu} | {cpu_ratio} | {rate} | {rate_ratio} |",
            ours.path, ours.upstream, ours.sessions
        );
    }
}

/// Where the machine's CPU went per request in the proxied runs, and the rate the cores could carry if
/// the proxy cost nothing: what bounds a rate when the upstream and the clients share the cores.
fn cpu_split(rows: &[Row]) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "\nCPU per request in each proxied run (µs: the proxy's processes, the upstream servers it started, the load generator's clients) and the most req/s {cores:.0} cores could carry if the proxy cost nothing:\n"
    );
    println!(
        "| path | proxy | upstream | sessions | req/s | proxy | upstream | clients | bound without the proxy |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let (Some(proxy), Some(upstream)) = (row.cpu, row.upstream_cpu) else {
            continue;
        };
        let (upstream, clients) = (row.per_request(upstream), row.per_request(row.client_cpu));
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.1} | {upstream:.1} | {clients:.1} | {:.0} |",
            row.path,
            row.proxy,
            row.upstream,
            row.sessions,
            row.rate(),
            row.per_request(proxy),
            cores * 1e6 / (upstream + clients).max(f64::MIN_POSITIVE)
        );
    }
}
