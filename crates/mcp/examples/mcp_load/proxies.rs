//! Starting what is measured: our proxy and the peers (PyPI `mcp-proxy`, npm `supergateway`), each in its
//! own process group so that it ends with everything it started.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which proxy: ours or a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tessera,
    McpProxy,
    Supergateway,
}

impl Peer {
    pub fn label(self) -> &'static str {
        match self {
            Peer::Tessera => "tessera",
            Peer::McpProxy => "mcp-proxy",
            Peer::Supergateway => "supergateway",
        }
    }
}

/// Where the executables are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub tessera: String,
    pub mcp_proxy: Option<String>,
    pub supergateway: Option<String>,
}

impl Bins {
    /// The proxies present: ours, then the peers that were given.
    pub fn proxies(&self) -> Vec<Peer> {
        let mut all = vec![Peer::Tessera];
        if self.mcp_proxy.is_some() {
            all.push(Peer::McpProxy);
        }
        if self.supergateway.is_some() {
            all.push(Peer::Supergateway);
        }
        all
    }

    fn bin(&self, proxy: Peer) -> &str {
        match proxy {
            Peer::Tessera => &self.tessera,
            Peer::McpProxy => self.mcp_proxy.as_deref().unwrap_or("mcp-proxy"),
            Peer::Supergateway => self.supergateway.as_deref().unwrap_or("supergateway"),
        }
    }

    /// The command line of `proxy` bridging its stdio to the Streamable HTTP server at `url`.
    pub fn bridge(&self, proxy: Peer, url: &str) -> Vec<String> {
        let bin = self.bin(proxy).to_owned();
        let rest: Vec<&str> = match proxy {
            Peer::Tessera => vec!["mcp", "connect", url],
            Peer::McpProxy => vec![
                "--log-level",
                "WARNING",
                "--transport",
                "streamablehttp",
                url,
            ],
            Peer::Supergateway => vec!["--streamableHttp", url, "--logLevel", "none"],
        };
        std::iter::once(bin)
            .chain(rest.into_iter().map(str::to_owned))
            .collect()
    }

    /// Starts `proxy` serving Streamable HTTP on a free port in front of `upstream`: a URL, or a server
    /// command (`--stateful` for supergateway: a child per session; mcp-proxy shares one child).
    pub fn serve(&self, proxy: Peer, upstream: &Upstream) -> Running {
        let port = free_port().to_string();
        let bin = self.bin(proxy);
        let mut command = Command::new(bin);
        match (proxy, upstream) {
            (Peer::Tessera, _) => {
                command.args(["mcp", "serve", "--listen", &format!("127.0.0.1:{port}")]);
                command.args(["--shutdown-grace", "1"]);
                match upstream {
                    Upstream::Url(url) => command.args(["--upstream", url]),
                    Upstream::Command(c) => command.arg("--").args(c),
                };
            }
            (Peer::McpProxy, Upstream::Command(c)) => {
                command.args([
                    "--log-level",
                    "WARNING",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port,
                ]);
                command.arg("--").args(c);
            }
            (Peer::Supergateway, Upstream::Command(c)) => {
                command.args([
                    "--stdio",
                    &c.join(" "),
                    "--outputTransport",
                    "streamableHttp",
                ]);
                command.args(["--stateful", "--port", &port, "--logLevel", "none"]);
            }
            (_, Upstream::Url(_)) => panic!("{} has no HTTP-to-HTTP mode", proxy.label()),
        }
        let started = Instant::now();
        let child = spawn_group(command.stdout(Stdio::null()).stderr(Stdio::null()));
        let addr = format!("127.0.0.1:{port}");
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} did not start",
                proxy.label()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Running {
            child,
            url: format!("http://{addr}/mcp"),
            startup: started.elapsed(),
        }
    }
}

/// What a proxy stands in front of.
#[derive(Debug, Clone)]
pub enum Upstream {
    Url(String),
    Command(Vec<String>),
}

/// A started server; ended (SIGTERM to its group, then SIGKILL) on drop.
pub struct Running {
    pub child: Child,
    pub url: String,
    /// From spawn to its port accepting connections.
    pub startup: Duration,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        end_group(&mut self.child);
    }
}

/// Spawns `command` as the leader of a new process group.
pub fn spawn_group(command: &mut Command) -> Child {
    command
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", command.get_program()))
}

/// SIGTERM to the child's group, SIGKILL after 3 s.
pub fn end_group(child: &mut Child) {
    let group = child.id() as i32;
    let signal = |s: &str| {
        let _ = Command::new("kill")
            .args([s, "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status();
    };
    signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    signal("-KILL");
    let _ = child.wait();
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
