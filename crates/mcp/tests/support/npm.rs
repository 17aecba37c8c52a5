//! Test set-up: installs the real MCP peers from npm once, into a cache under the target dir.
//!
//! `npm install --prefix <target>/tmp/mcp-npm @modelcontextprotocol/server-everything@2026.8.31` (Node 20+),
//! done into a scratch dir and renamed into place, so concurrent test binaries never see half an install.
//! Set `TESSERA_MCP_NPM_DIR` to use an existing install instead.

#![allow(dead_code)]

use std::path::PathBuf;
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
        if bin.exists() {
            return bin;
        }
        let scratch = root.with_file_name(format!("mcp-npm-{}", std::process::id()));
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
            .arg(SERVER_EVERYTHING)
            .status()
            .expect("run npm (Node 20+ and npm must be installed)");
        assert!(status.success(), "npm install {SERVER_EVERYTHING} failed");
        if std::fs::rename(&scratch, &root).is_err() {
            // Another test binary installed it first.
            let _ = std::fs::remove_dir_all(&scratch);
        }
        assert!(bin.exists(), "{} missing after npm install", bin.display());
        bin
    })
    .clone()
}
