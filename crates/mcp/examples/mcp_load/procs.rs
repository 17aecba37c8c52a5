//! A proxy's own cost, read from /proc: CPU time (utime+stime) and resident memory of its process tree, with
//! the upstream servers it started left out (they are the measured server, not the proxy).

use std::collections::HashMap;
use std::time::Duration;

/// Every process's parent, from /proc/*/stat.
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = stat_field(pid, 1).and_then(|f| f.parse().ok()) {
            map.insert(pid, ppid);
        }
    }
    map
}

/// Field `i` of /proc/PID/stat, counted after the command name (0 = state, 1 = ppid, 11 = utime ...).
fn stat_field(pid: u32, i: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(i).map(str::to_owned)
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// A process tree: `root` and its descendants. Processes whose command line contains `upstream` (and their
/// descendants) are the upstream server's, counted apart.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The proxy's own processes.
    pub own: Vec<u32>,
    /// The upstream servers it started.
    pub upstream: Vec<u32>,
}

impl Tree {
    pub fn of(root: u32, upstream_marker: Option<&str>) -> Tree {
        let parents = parents();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (&pid, &ppid) in &parents {
            children.entry(ppid).or_default().push(pid);
        }
        let mut tree = Tree {
            own: Vec::new(),
            upstream: Vec::new(),
        };
        let mut stack = vec![(root, false)];
        while let Some((pid, in_upstream)) = stack.pop() {
            let upstream = in_upstream
                || (pid != root && upstream_marker.is_some_and(|m| cmdline(pid).contains(m)));
            if upstream {
                tree.upstream.push(pid);
            } else {
                tree.own.push(pid);
            }
            for &child in children.get(&pid).into_iter().flatten() {
                stack.push((child, upstream));
            }
        }
        tree
    }
}

/// User+system CPU time of these processes (clock ticks of 10 ms).
pub fn cpu(pids: &[u32]) -> Duration {
    let ticks: u64 = pids
        .iter()
        .map(|&pid| {
            let field = |i| {
                stat_field(pid, i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            field(11) + field(12)
        })
        .sum();
    Duration::from_millis(ticks * 10)
}

/// This process's own CPU time (all its threads).
pub fn own_cpu() -> Duration {
    cpu(&[std::process::id()])
}

/// Resident memory of these processes, in kB.
pub fn rss_kb(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}
