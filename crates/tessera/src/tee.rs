//! `tessera tee-k`, `tessera tee-t` and `tessera prove`: the attested-HTTPS services and the prover, thin
//! over `tessera_tee::service` (protocol: docs/tee-protocol.md). Each service prints its URL, its channel key
//! (clients and the other TEE pin it) and its signer address (verifiers pin it), and with `--admin` serves
//! /health and /metrics (Prometheus).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tessera_channel::{Identity, PublicKey};
use tessera_session::Secret;
use tessera_tee::service::{
    Limits, ProveRequest, Reveal, TeeEndpoint, TeeK, TeeKConfig, TeeT, TeeTConfig, prove,
};
use tessera_tee::signing::Signer;
use tessera_tee::tls_client::RootStore;
use tessera_tee::{CipherSuite, TlsVersion};
use zeroize::{Zeroize, Zeroizing};

/// Options both services share.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// Channel identity key file (created, mode 0600, if missing); without it a fresh key per run.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// secp256k1 signing key file, 64 hex digits (created, mode 0600, if missing; an existing one must be
    /// private, mode 0600, and at most 4 KiB); without it a fresh key per run (verifiers pin the printed
    /// signer address).
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Serve GET /health and GET /metrics (Prometheus) on this address.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Seconds one proof session may take before it ends with an error.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400), value_name = "SECS", default_value_t = 60)]
    pub session_timeout: u64,
    /// Most sessions at once.
    #[arg(long, default_value_t = 1000)]
    pub max_sessions: usize,
    /// On SIGINT/SIGTERM, seconds open sessions get to finish.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=3600), default_value_t = 5)]
    pub grace: u64,
}

/// TEE_K: runs TLS for provers and holds the keys.
#[derive(Debug, clap::Args)]
pub struct TeeKArgs {
    /// Address to listen on; clients connect to ws://ADDR/ws.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// TEE_T's address (HOST:PORT; TEE_K connects to ws://HOST:PORT/teek) or its ws:// URL.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    pub tee_t: String,
    /// TEE_T's channel key (64 hex digits, as `tessera tee-t` prints it): pinned.
    #[arg(long, value_name = "HEX")]
    pub tee_t_key: PublicKey,
    /// Trust these PEM roots for websites instead of the Mozilla roots (test sites).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// TEE_T: checks and makes tags, never holds a key.
#[derive(Debug, clap::Args)]
pub struct TeeTArgs {
    /// Address to listen on; clients connect to ws://ADDR/ws, TEE_K to ws://ADDR/teek.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// TEE_K's channel key (64 hex digits): only it may connect to /teek. Without it the first TEE_K to
    /// connect is pinned for the life of the process.
    #[arg(long, value_name = "HEX")]
    pub tee_k_key: Option<PublicKey>,
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Prove an HTTPS page with TEE_K and TEE_T; writes the proof file `tessera verify` checks.
#[derive(Debug, clap::Args)]
pub struct ProveArgs {
    /// `https://HOST[:PORT]/PATH`
    pub url: String,
    /// A request header, 'Name: value' (repeatable). Visible to other local users (ps): put secret ones
    /// (cookies, tokens) in --header-file instead.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Request headers from a file, one 'Name: value' per line (blank lines and lines starting with '#'
    /// skipped; repeatable), so secret values stay out of argv. The file must be private (mode 0600) and
    /// at most 64 KiB.
    #[arg(long = "header-file", value_name = "FILE")]
    pub header_files: Vec<PathBuf>,
    /// Hide this header's value from everyone (sensitive; repeatable).
    #[arg(long, value_name = "NAME")]
    pub hide_header: Vec<String>,
    /// Hide this query parameter's value from everyone (sensitive; repeatable). The value must be printable
    /// ASCII without space, `&` or `#` (percent-encoded).
    #[arg(long, value_name = "NAME")]
    pub hide_param: Vec<String>,
    /// Hide this header's value from TEE_K but reveal it to the verifier (sensitive_proof; repeatable).
    #[arg(long, value_name = "NAME")]
    pub proof_header: Vec<String>,
    /// Reveal the response bytes this regex matches (repeatable; with any --reveal-*, the rest is hidden
    /// except the status line).
    #[arg(long, value_name = "RE")]
    pub reveal_regex: Vec<String>,
    /// Reveal this member of the JSON body, e.g. `$.user.name` or `items[0].id` (repeatable).
    #[arg(long, value_name = "PATH")]
    pub reveal_json: Vec<String>,
    /// The verifier's nonce (hex), signed into both outputs.
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// TEE_K's address (HOST:PORT or ws:// URL).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub tee_k: String,
    /// TEE_K's channel key (64 hex digits): pinned.
    #[arg(long, value_name = "HEX")]
    pub tee_k_key: PublicKey,
    /// TEE_T's address (HOST:PORT or ws:// URL).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    pub tee_t: String,
    /// TEE_T's channel key (64 hex digits): pinned.
    #[arg(long, value_name = "HEX")]
    pub tee_t_key: PublicKey,
    /// Open the TCP connection to this address instead of resolving the host (test sites).
    #[arg(long, value_name = "ADDR")]
    pub connect_to: Option<SocketAddr>,
    /// Ask for this TLS version only: 1.2 or 1.3.
    #[arg(long, value_name = "VERSION")]
    pub tls: Option<String>,
    /// Ask for this cipher suite only (IANA name, e.g. TLS_AES_128_GCM_SHA256).
    #[arg(long, value_name = "NAME")]
    pub suite: Option<String>,
    /// Seconds the whole proof may take.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// Where to write the proof file.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: PathBuf,
}

fn limits(args: &ServiceArgs) -> Limits {
    Limits {
        session_deadline: Duration::from_secs(args.session_timeout.max(1)),
        max_sessions: args.max_sessions.max(1),
        ..Limits::default()
    }
}

fn identity(path: Option<&Path>) -> anyhow::Result<Identity> {
    match path {
        None => Ok(Identity::generate()),
        Some(path) if path.exists() => {
            Identity::load(path).with_context(|| format!("loading {}", path.display()))
        }
        Some(path) => {
            let identity = Identity::generate();
            identity
                .save(path)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(identity)
        }
    }
}

fn signer(path: Option<&Path>) -> anyhow::Result<Signer> {
    let Some(path) = path else {
        return Ok(Signer::generate());
    };
    if path.exists() {
        // Read as channel keys are: private file, a few KiB at most, zeroized; errors never quote it.
        let text = crate::chat::secret_file::read_private(
            path,
            crate::chat::secret_file::MAX_SECRET_FILE_LEN,
            "signing key",
        )?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        let hex_ok = std::str::from_utf8(&text)
            .is_ok_and(|text| hex::decode_to_slice(text.trim(), &mut bytes[..]).is_ok());
        if !hex_ok {
            bail!("the signing key {} is not 64 hex digits", path.display());
        }
        return Signer::from_secret_bytes(&bytes[..]).with_context(|| {
            format!(
                "the signing key {} is not a valid secp256k1 key",
                path.display()
            )
        });
    }
    loop {
        let secret = Secret::<32>::random();
        if let Ok(signer) = Signer::from_secret_bytes(secret.expose_secret()) {
            let mut text = hex::encode(secret.expose_secret());
            let written = write_private(path, text.as_bytes());
            text.zeroize();
            written.with_context(|| format!("writing {}", path.display()))?;
            return Ok(signer);
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// The Prometheus recorder, installed before any registry exists, when --admin is given.
fn metrics(
    args: &ServiceArgs,
) -> anyhow::Result<Option<metrics_exporter_prometheus::PrometheusHandle>> {
    args.admin
        .map(|_| tessera_session::metrics::install_prometheus())
        .transpose()
        .context("installing the metrics recorder")
}

async fn serve_admin(
    args: &ServiceArgs,
    handle: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let (Some(addr), Some(handle)) = (args.admin, handle) else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("admin: listening on {addr}"))?;
    println!(
        "admin on http://{}/ (/health, /metrics)",
        listener.local_addr()?
    );
    let router = tessera_session::metrics::metrics_router(handle);
    Ok(Some(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "admin server failed");
        }
    })))
}

/// Runs `tessera tee-k`.
pub async fn run_tee_k(args: TeeKArgs) -> anyhow::Result<()> {
    let handle = metrics(&args.service)?;
    let tee_t_url = if args.tee_t.starts_with("ws://") || args.tee_t.starts_with("wss://") {
        args.tee_t.clone()
    } else {
        format!("ws://{}/teek", args.tee_t)
    };
    let mut config = TeeKConfig::new(
        identity(args.service.key.as_deref())?,
        signer(args.service.signing_key.as_deref())?,
        tee_t_url,
        args.tee_t_key,
    )
    .with_limits(limits(&args.service));
    if let Some(ca) = &args.ca {
        config = config.with_roots(
            RootStore::from_pem_file(ca).with_context(|| format!("reading {}", ca.display()))?,
        );
    }
    let tee_k = TeeK::new(config);
    // Handlers installed before the service says it listens: a signal from then on stops it gracefully.
    let signals = tessera_session::shutdown::listen();
    let serving = tee_k
        .serve(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!(
        "tee-k on {} with key {} signer {}",
        serving.client_url(),
        tee_k.public_key(),
        tee_k.signer_address()
    );
    let admin = serve_admin(&args.service, handle).await?;
    signals.recv().await;
    serving.stop().await;
    tee_k
        .shutdown(Duration::from_secs(args.service.grace))
        .await;
    if let Some(task) = admin {
        task.abort();
    }
    Ok(())
}

/// Runs `tessera tee-t`.
pub async fn run_tee_t(args: TeeTArgs) -> anyhow::Result<()> {
    let handle = metrics(&args.service)?;
    let config = TeeTConfig::new(
        identity(args.service.key.as_deref())?,
        signer(args.service.signing_key.as_deref())?,
        args.tee_k_key,
    )
    .with_limits(limits(&args.service));
    let tee_t = TeeT::new(config);
    // Handlers installed before the service says it listens: a signal from then on stops it gracefully.
    let signals = tessera_session::shutdown::listen();
    let serving = tee_t
        .serve(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!(
        "tee-t on {} with key {} signer {}",
        serving.client_url(),
        tee_t.public_key(),
        tee_t.signer_address()
    );
    let admin = serve_admin(&args.service, handle).await?;
    signals.recv().await;
    serving.stop().await;
    tee_t
        .shutdown(Duration::from_secs(args.service.grace))
        .await;
    if let Some(task) = admin {
        task.abort();
    }
    Ok(())
}

/// The most a `--header-file` holds.
const MAX_HEADER_FILE_LEN: usize = 64 << 10;

/// The headers of a `--header-file`: one `Name: value` per line, blank and `#` lines skipped. The file
/// is read as a secret (private mode, bounded, zeroized); errors name the line, never its contents.
fn header_file(path: &Path) -> anyhow::Result<Vec<(String, Zeroizing<String>)>> {
    let bytes = crate::chat::secret_file::read_private(path, MAX_HEADER_FILE_LEN, "header file")?;
    let Ok(text) = std::str::from_utf8(&bytes) else {
        bail!("the header file {} is not UTF-8", path.display());
    };
    parse_headers(text).map_err(|line| {
        anyhow::anyhow!(
            "the header file {} line {line}: expected 'Name: value'",
            path.display()
        )
    })
}

/// `Name: value` lines; `Err(n)` names the first malformed line (1-based).
fn parse_headers(text: &str) -> Result<Vec<(String, Zeroizing<String>)>, usize> {
    let mut headers = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                headers.push((
                    name.trim().to_owned(),
                    Zeroizing::new(value.trim().to_owned()),
                ));
            }
            _ => return Err(index + 1),
        }
    }
    Ok(headers)
}

/// Runs `tessera prove`: prints the response, writes the proof file, and shows what a verifier will see.
pub async fn run_prove(args: ProveArgs) -> anyhow::Result<()> {
    let mut request =
        ProveRequest::get(&args.url)?.timeout(Duration::from_secs(args.timeout.max(1)));
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("-H {header:?}: expected 'Name: value'"))?;
        request = request.header(name.trim(), value.trim());
    }
    for path in &args.header_files {
        for (name, value) in header_file(path)? {
            request = request.header(name.trim(), value.trim());
        }
    }
    for name in &args.hide_header {
        request = request.hide_header(name);
    }
    for name in &args.hide_param {
        request = request.hide_param(name);
    }
    for name in &args.proof_header {
        request = request.proof_header(name);
    }
    for re in &args.reveal_regex {
        request = request.reveal(Reveal::Regex(re.clone()));
    }
    for path in &args.reveal_json {
        request = request.reveal(Reveal::JsonPath(path.clone()));
    }
    if let Some(nonce) = &args.nonce {
        request = request
            .nonce(hex::decode(nonce.trim_start_matches("0x")).context("--nonce is not hex")?);
    }
    if let Some(addr) = args.connect_to {
        request = request.connect_to(addr);
    }
    match args.tls.as_deref() {
        None => {}
        Some("1.2") => request = request.force_version(TlsVersion::Tls12),
        Some("1.3") => request = request.force_version(TlsVersion::Tls13),
        Some(other) => bail!("--tls {other}: expected 1.2 or 1.3"),
    }
    if let Some(name) = &args.suite {
        let suite = CipherSuite::from_iana_name(name)
            .with_context(|| format!("--suite {name}: not one of the nine AEAD suites"))?;
        request = request.force_suite(suite);
    }
    let tee_k = TeeEndpoint::new(args.tee_k.clone(), args.tee_k_key);
    let tee_t = TeeEndpoint::new(args.tee_t.clone(), args.tee_t_key);
    let proved = prove(&request, &tee_k, &tee_t)
        .await
        .context("proof failed")?;
    std::fs::write(&args.out, tessera_tee::proof_file::to_json(&proved.bundle))
        .with_context(|| format!("writing {}", args.out.display()))?;
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&proved.response)?;
    stdout.flush()?;
    eprintln!(
        "\nproof written to {} ({}, session {}); a verifier will see:\n{}",
        args.out.display(),
        proved.suite,
        hex::encode(proved.session_id),
        String::from_utf8_lossy(&proved.revealed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_file_lines_parse_and_a_bad_line_is_named_not_quoted() {
        let headers = parse_headers("# secrets\nCookie: s=abc:def\r\n\n  X-Token :  t1  \n")
            .expect("headers");
        let shown: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(shown, [("Cookie", "s=abc:def"), ("X-Token", "t1")]);
        assert_eq!(parse_headers("A: 1\nno colon here\n").err(), Some(2));
        assert_eq!(parse_headers(": value\n").err(), Some(1));
    }
}
