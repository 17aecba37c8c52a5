//! `tessera verify`: the offline verifier of attested HTTPS transcripts (`tessera_tee::verify`) on a proof
//! file, against signers the verifier pins itself.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;
use tessera_tee::proof_file;
use tessera_tee::signing::Address;
use tessera_tee::verify::{VerifiedProof, VerifierConfig, verify_bundle};

/// Verify a proof file offline.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The proof file `tessera prove -o` wrote.
    #[arg(value_name = "PROOF")]
    pub proof: PathBuf,
    /// A JSON file `{"tee_k": "0x…", "tee_t": "0x…"}` pinning both signer addresses.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tee_k_signer", "tee_t_signer"],
          required_unless_present_all = ["tee_k_signer", "tee_t_signer"])]
    pub signers: Option<PathBuf>,
    /// TEE_K's pinned signer address (0x + 40 hex digits).
    #[arg(long, value_name = "ADDR", requires = "tee_t_signer")]
    pub tee_k_signer: Option<Address>,
    /// TEE_T's pinned signer address (0x + 40 hex digits).
    #[arg(long, value_name = "ADDR", requires = "tee_k_signer")]
    pub tee_t_signer: Option<Address>,
    /// The nonce this verifier gave the prover (hex); both outputs must carry it.
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,
    /// Oldest accepted proof, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub max_age: u64,
    /// Print the result as one JSON object (for programs) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Deserialize)]
struct SignersFile {
    tee_k: String,
    tee_t: String,
}

/// Runs `tessera verify`: prints what the proof shows, or fails with the reason.
pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let (tee_k, tee_t) = pinned_signers(&args)?;
    let mut config = VerifierConfig::new(tee_k, tee_t);
    config.max_age_ms = args.max_age.saturating_mul(1000);
    if let Some(nonce) = &args.nonce {
        config.nonce =
            Some(hex::decode(nonce.trim_start_matches("0x")).context("--nonce is not hex")?);
    }
    let bytes = read_limited(&args.proof)?;
    let bundle = proof_file::from_json(&bytes)
        .with_context(|| format!("reading {}", args.proof.display()))?;
    let proof = verify_bundle(&bundle, &config).context("proof rejected")?;
    if args.json {
        println!("{}", to_json(&proof, &config));
    } else {
        print_text(&proof, &config);
    }
    Ok(())
}

fn pinned_signers(args: &VerifyArgs) -> anyhow::Result<(Address, Address)> {
    if let (Some(k), Some(t)) = (args.tee_k_signer, args.tee_t_signer) {
        return Ok((k, t));
    }
    let Some(path) = &args.signers else {
        bail!("pin the signers: --signers FILE, or --tee-k-signer ADDR and --tee-t-signer ADDR");
    };
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file: SignersFile = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{}: expected {{\"tee_k\": \"0x…\", \"tee_t\": \"0x…\"}}",
            path.display()
        )
    })?;
    let k = file.tee_k.parse().context("tee_k in the signers file")?;
    let t = file.tee_t.parse().context("tee_t in the signers file")?;
    Ok((k, t))
}

fn read_limited(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(proof_file::MAX_PROOF_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes)
}

fn suite_name(code: u32) -> String {
    u16::try_from(code)
        .ok()
        .and_then(|c| tessera_tee::CipherSuite::from_rustls(rustls::CipherSuite::from(c)).ok())
        .map_or_else(|| format!("0x{code:04x}"), |s| s.iana_name().to_owned())
}

fn version_name(code: u32) -> &'static str {
    match code {
        0x0304 => "TLS 1.3",
        0x0303 => "TLS 1.2",
        _ => "unknown",
    }
}

fn print_text(proof: &VerifiedProof, config: &VerifierConfig) {
    println!("VALID proof of an HTTPS exchange");
    println!(
        "  signers   TEE_K {}  TEE_T {} (pinned)",
        config.tee_k_signer, config.tee_t_signer
    );
    println!("  session   {}", hex::encode(&proof.session_id));
    println!("  server    {}:{}", proof.hostname, proof.port);
    println!(
        "  tls       {} {}",
        version_name(proof.tls_version),
        suite_name(proof.cipher_suite)
    );
    println!("  time      {} ms since the Unix epoch", proof.timestamp_ms);
    if let Some(cert) = &proof.certificate {
        println!(
            "  cert      subject CN {:?}, issuer CN {:?}, DNS {:?}, valid {}..{} (Unix s)",
            cert.subject_cn, cert.issuer_cn, cert.dns_names, cert.not_before, cert.not_after
        );
    }
    match &config.nonce {
        Some(n) => println!("  nonce     {} (matches)", hex::encode(n)),
        None => println!("  nonce     none checked"),
    }
    for range in &proof.proof_ranges {
        let end = range.start + range.length;
        let value = proof.request.get(range.start..end).unwrap_or_default();
        println!(
            "  revealed  request bytes {}..{}: {}",
            range.start,
            end,
            String::from_utf8_lossy(value)
        );
    }
    println!("--- request (hidden bytes as *) ---");
    println!("{}", String::from_utf8_lossy(&proof.request).trim_end());
    println!("--- response (hidden bytes as *) ---");
    println!("{}", String::from_utf8_lossy(&proof.response));
}

fn to_json(proof: &VerifiedProof, config: &VerifierConfig) -> serde_json::Value {
    serde_json::json!({
        "valid": true,
        "tee_k_signer": config.tee_k_signer.to_string(),
        "tee_t_signer": config.tee_t_signer.to_string(),
        "session_id": hex::encode(&proof.session_id),
        "hostname": proof.hostname,
        "port": proof.port,
        "tls_version": version_name(proof.tls_version),
        "cipher_suite": suite_name(proof.cipher_suite),
        "timestamp_ms": proof.timestamp_ms,
        "nonce": config.nonce.as_ref().map(hex::encode),
        "certificate": proof.certificate.as_ref().map(|c| serde_json::json!({
            "subject_cn": c.subject_cn, "issuer_cn": c.issuer_cn,
            "not_before": c.not_before, "not_after": c.not_after, "dns_names": c.dns_names,
        })),
        "request": String::from_utf8_lossy(&proof.request),
        "proof_ranges": proof.proof_ranges.iter().map(|r| serde_json::json!({
            "start": r.start, "length": r.length,
            "value": String::from_utf8_lossy(proof.request.get(r.start..r.start + r.length).unwrap_or_default()),
        })).collect::<Vec<_>>(),
        "response": String::from_utf8_lossy(&proof.response),
    })
}
