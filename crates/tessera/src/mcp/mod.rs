//! `tessera mcp …`: a thin command-line layer over `tessera-mcp`.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tessera_mcp::http::{HttpConfig, HttpProxy, Upstream};
use tessera_mcp::pipe::{PipeIn, PipeOut};
use tessera_mcp::stdio::{self, EndedBy};
use tessera_mcp::tape::{Tape, TapeConfig};
use tessera_mcp::upstream::child::ChildSpec;
use tessera_mcp::{McpConfig, Sessions};
use tokio::io::{AsyncRead, AsyncWrite};

mod children;
mod rules_file;

/// The MCP proxy.
#[derive(Debug, Args)]
pub struct McpArgs {
    #[command(subcommand)]
    command: McpCommand,
}

impl McpArgs {
    /// The runtime's worker threads when `--threads` is not given: one for `mcp serve` in front of a
    /// command. Its children do the servers' work in processes of their own; the proxy's part is pipe
    /// and socket I/O, which one thread does with less CPU per request (no wake-ups between threads)
    /// and, measured against server-everything and a fast server, at the same or a better rate
    /// (BENCHMARKS.md, mcp). `None`: one per core.
    pub fn default_worker_threads(&self) -> Option<usize> {
        match &self.command {
            McpCommand::Serve(serve) if serve.upstream.is_none() => Some(1),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum McpCommand {
    /// Proxy this process's stdin/stdout to a server started as a child process.
    Stdio(StdioArgs),
    /// Serve Streamable HTTP for many clients, in front of an upstream URL or a command (one child per session).
    Serve(ServeArgs),
    /// Bridge this process's stdin/stdout to a remote Streamable HTTP server.
    Connect {
        /// The server's endpoint (plain http://).
        url: String,
        /// Deadline of one request, in seconds.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400), default_value_t = 60)]
        request_timeout: u64,
    },
    /// Recordings made with --tape.
    Tape {
        #[command(subcommand)]
        command: TapeCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TapeCommand {
    /// Summarize a tape: sessions, frames, errors, and p50/p95 latency per method.
    Show {
        /// The tape file.
        file: PathBuf,
    },
}

/// Options shared by the proxy commands.
#[derive(Debug, Args)]
struct Common {
    /// Record every frame to this tape (JSON lines).
    #[arg(long)]
    tape: Option<PathBuf>,
    /// In the tape, redact the values of members with this name (repeatable; adds to authorization, token,
    /// password, secret, apiKey, api_key).
    #[arg(long)]
    redact_key: Vec<String>,
    /// In the tape, redact the value at this JSON pointer, e.g. /params/arguments/query (repeatable).
    #[arg(long)]
    redact_path: Vec<String>,
    /// In the tape, redact this HTTP request header (repeatable; adds to Authorization, Proxy-Authorization,
    /// Cookie, Set-Cookie, X-Api-Key, Api-Key, X-Auth-Token, X-Amz-Security-Token).
    #[arg(long)]
    redact_header: Vec<String>,
    /// Deadline of one request, in seconds: past it the sender gets an error and the receiver a cancel.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400), default_value_t = 60)]
    request_timeout: u64,
    /// Most requests pending in one session.
    #[arg(long, default_value_t = 1000)]
    max_pending: usize,
    /// Most requests pending in all sessions.
    #[arg(long, default_value_t = 10_000)]
    max_pending_total: usize,
    /// The longest message accepted, in bytes.
    #[arg(long, default_value_t = tessera_mcp::lines::DEFAULT_MAX_LINE)]
    max_message: usize,
    /// Grace period for a child server, in milliseconds, after closing its stdin and again after SIGTERM.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=600_000), default_value_t = 2000)]
    grace_ms: u64,
    /// Interception rules, both directions (JSON: method, direction, tool, regexes, JSON pointer values, session
    /// tags → block, log or tag); see docs/mcp.md. Read again on SIGHUP, sessions kept (a file that does
    /// not read or parse is reported, and the rules in force stay).
    #[arg(long)]
    rules: Option<PathBuf>,
}

impl Common {
    fn config(&self) -> McpConfig {
        let mut config = McpConfig::default();
        config.pending.deadline = Duration::from_secs(self.request_timeout.max(1));
        config.pending.per_session = self.max_pending;
        config.pending.global = self.max_pending_total;
        config
    }

    fn child(&self, command: &[OsString]) -> anyhow::Result<ChildSpec> {
        let mut spec = ChildSpec::from_command(command)?;
        spec.grace = Duration::from_millis(self.grace_ms);
        spec.max_line = self.max_message;
        spec.prepare = Some(children::end_with_the_proxy);
        Ok(spec)
    }

    fn rules(&self) -> anyhow::Result<tessera_mcp::rules::RuleSet> {
        rules_file::load(self.rules.as_deref())
    }

    async fn tape(&self) -> anyhow::Result<Option<(Tape, tessera_mcp::tape::TapeWriter)>> {
        match &self.tape {
            Some(path) => {
                let mut config = TapeConfig::default();
                config.redact_keys.extend(self.redact_key.iter().cloned());
                config.redact_paths = self.redact_path.clone();
                config
                    .redact_headers
                    .extend(self.redact_header.iter().cloned());
                Ok(Some(Tape::create(path, config).await?))
            }
            None => Ok(None),
        }
    }
}

#[derive(Debug, Args)]
struct StdioArgs {
    #[command(flatten)]
    common: Common,
    /// The server command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    common: Common,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8808")]
    listen: SocketAddr,
    /// The upstream Streamable HTTP endpoint (plain http://), instead of a command.
    #[arg(long, conflicts_with = "command")]
    upstream: Option<String>,
    /// An Origin to accept besides localhost ones (repeatable).
    #[arg(long)]
    allow_origin: Vec<String>,
    /// The `retry` (ms) announced by priming events on SSE streams of 2025-11-25 sessions (command upstream).
    #[arg(long, default_value_t = 3000)]
    sse_retry_ms: u64,
    /// How long (ms) a broken POST response stream waits to be resumed before its request is withdrawn
    /// (command upstream, 2025-11-25 sessions; 0 = no resumption).
    #[arg(long, default_value_t = 10_000)]
    resume_window_ms: u64,
    /// A session idle this long (seconds) is ended.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=31_536_000), default_value_t = 3600)]
    idle_timeout: u64,
    /// On SIGINT/SIGTERM, how long (seconds) sessions get to finish before they are cancelled.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=3600), default_value_t = 10)]
    shutdown_grace: u64,
    /// The server command (one child per session) and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<OsString>,
}

/// Runs `tessera mcp …`.
pub async fn run(args: McpArgs) -> anyhow::Result<()> {
    match args.command {
        McpCommand::Stdio(args) => run_stdio(args).await,
        McpCommand::Serve(args) => run_serve(args).await,
        McpCommand::Connect {
            url,
            request_timeout,
        } => {
            let mut config = McpConfig {
                name: "mcp-connect",
                idle_timeout: Duration::from_secs(365 * 24 * 3600),
                ..McpConfig::default()
            };
            config.pending.deadline = Duration::from_secs(request_timeout.max(1));
            let frames = on_one_thread("connect", async move {
                let sessions = Sessions::new(config);
                let (client_in, client_out) = client_pipes();
                Ok(tessera_mcp::connect::run(&sessions, &url, client_in, client_out).await?)
            })
            .await?;
            tracing::info!(frames, "mcp connect done");
            let _ = std::io::stdout().flush();
            // As for stdio: do not wait for a blocking stdin reader that may never return.
            Err(crate::cli::LeaveNow(0).into())
        }
        McpCommand::Tape {
            command: TapeCommand::Show { file },
        } => {
            let reader = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let summary = tessera_mcp::tape::summarize(std::io::BufReader::new(reader))?;
            print!("{summary}");
            Ok(())
        }
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let upstream = match (&args.upstream, args.command.is_empty()) {
        (Some(url), true) => Upstream::Url(url.clone()),
        (None, false) => Upstream::Command(args.common.child(&args.command)?),
        _ => anyhow::bail!("give exactly one upstream: --upstream URL, or a command after `--`"),
    };
    let handle = tessera_session::metrics::install_prometheus()
        .context("installing the metrics recorder")?;
    let sessions = Sessions::new(McpConfig {
        name: "mcp-http",
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        ..args.common.config()
    });
    let tape = args.common.tape().await?;
    let mut config = HttpConfig::new(upstream);
    config.allowed_origins = args.allow_origin.clone();
    config.max_body = args.common.max_message;
    config.sse_retry_ms = args.sse_retry_ms;
    config.resume_window_ms = args.resume_window_ms;
    let rules = args.common.rules()?;
    config.rules = rules.clone();
    let proxy = HttpProxy::new(config, sessions, tape.as_ref().map(|(t, _)| t.clone()))?;
    // Handlers installed before the service says it listens: a signal from then on stops it gracefully
    // (SIGHUP, with a rules file, reloads it).
    let signals = tessera_session::shutdown::listen();
    let _reloading = rules_file::reload_on_hangup(args.common.rules.as_deref(), &rules)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!("tessera mcp serve: listening on http://{addr}/mcp");
    tracing::info!(%addr, "mcp serve listening");
    let report = proxy
        .serve(
            listener,
            tessera_session::metrics::metrics_router(handle),
            signals.recv(),
            Duration::from_secs(args.shutdown_grace),
        )
        .await?;
    drop(proxy);
    if let Some((tape, writer)) = tape {
        drop(tape);
        // Every session has ended, so every clone of the tape is gone; bounded all the same.
        match tokio::time::timeout(Duration::from_secs(5), writer.finish()).await {
            Ok(done) => done.context("writing the tape")?,
            Err(_) => tracing::warn!("the tape writer did not finish in time"),
        }
    }
    tracing::info!(
        finished = report.finished,
        cancelled = report.cancelled,
        "mcp serve stopped"
    );
    Ok(())
}

/// One session, two pipes: a single-threaded runtime serves it best (no cross-thread wake-ups per message).
async fn run_stdio(args: StdioArgs) -> anyhow::Result<()> {
    on_one_thread("stdio", stdio_proxy(args)).await
}

/// Runs `work` on a runtime of its own with one thread: a single-session bridge (`stdio`, `connect`) spends
/// less CPU per message when its tasks never wake each other across threads.
async fn on_one_thread<T: Send + 'static>(
    what: &'static str,
    work: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("starting the {what} runtime"))?;
    tokio::task::spawn_blocking(move || {
        let done = runtime.block_on(work);
        // Its stdin reader is a blocking thread that may never return: do not wait for it.
        runtime.shutdown_background();
        done
    })
    .await
    .with_context(|| format!("{what} thread"))?
}

async fn stdio_proxy(args: StdioArgs) -> anyhow::Result<()> {
    let spec = args.common.child(&args.command)?;
    let rules = args.common.rules()?;
    let sessions = Sessions::new(McpConfig {
        name: "mcp-stdio",
        idle_timeout: Duration::from_secs(365 * 24 * 3600),
        ..args.common.config()
    });
    let tape = args.common.tape().await?;
    let (client_in, client_out) = client_pipes();
    // SIGTERM or SIGINT stops the proxy, which shuts the child down (it runs in a process group of its
    // own, so the signal does not reach it) and finishes the tape.
    // The handlers are installed before the child starts: a signal from then on stops the proxy.
    let signals = tessera_session::shutdown::listen();
    let _reloading = rules_file::reload_on_hangup(args.common.rules.as_deref(), &rules)?;
    let stop = tessera_session::CancellationToken::new();
    let on_signal = stop.clone();
    let signals = tokio::spawn(async move {
        signals.recv().await;
        on_signal.cancel();
    });
    let options = stdio::StdioOptions {
        tape: tape.as_ref().map(|(t, _)| t.clone()),
        rules,
        stop: Some(stop),
    };
    let exit = stdio::run_with(&sessions, &spec, client_in, client_out, options).await;
    signals.abort();
    let exit = exit.context("stdio proxy")?;
    if let Some((tape, writer)) = tape {
        drop(tape);
        if let Err(error) = writer.finish().await {
            tracing::error!(%error, "writing the tape");
            return Err(crate::cli::LeaveNow(1).into());
        }
    }
    tracing::info!(ended_by = ?exit.ended_by, frames = exit.frames, status = ?exit.child_status, "mcp stdio done");
    let code = match (exit.ended_by, exit.child_status) {
        (EndedBy::Server, Some(status)) => status.code().unwrap_or(1),
        _ => 0,
    };
    // The runtime's stdin reader is a blocking thread that may never return: leave without waiting for it.
    let _ = std::io::stdout().flush();
    Err(crate::cli::LeaveNow(code).into())
}

type ClientIo = (
    Box<dyn AsyncRead + Send + Unpin>,
    Box<dyn AsyncWrite + Send + Unpin>,
);

/// This process's stdin/stdout: pipes (the usual case under an MCP client) are polled directly; anything
/// else goes through Tokio's.
fn client_pipes() -> ClientIo {
    match (PipeIn::stdin(), PipeOut::stdout()) {
        (Ok(input), Ok(output)) => (Box::new(input), Box::new(output)),
        _ => (Box::new(tokio::io::stdin()), Box::new(tokio::io::stdout())),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn default_threads(args: &[&str]) -> Option<usize> {
        let cli = Cli::try_parse_from(args).expect("parses");
        match cli.command {
            Some(Command::Mcp(mcp)) => mcp.default_worker_threads(),
            _ => panic!("not an mcp command"),
        }
    }

    /// `mcp serve` in front of a command runs on one worker thread; in front of a URL, and every other
    /// mcp command, on the runtime's default (one per core).
    #[test]
    fn serve_in_front_of_a_command_defaults_to_one_thread() {
        assert_eq!(
            default_threads(&["tessera", "mcp", "serve", "--", "my-server", "--flag"]),
            Some(1)
        );
        assert_eq!(
            default_threads(&[
                "tessera",
                "mcp",
                "serve",
                "--upstream",
                "http://127.0.0.1:1/mcp"
            ]),
            None
        );
        assert_eq!(
            default_threads(&["tessera", "mcp", "connect", "http://127.0.0.1:1/mcp"]),
            None
        );
    }
}
