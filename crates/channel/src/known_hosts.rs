//! Known-hosts pinning for clients: trust on first use, hard failure on change.
//!
//! The file holds one line per server, `host:port <64 hex digits>`; `#` starts a comment. The first time a
//! client meets a server it appends the server's key ([`Trust::FirstUse`]); afterwards the key must match
//! ([`Trust::Known`]), and a different key is [`KnownHostsError::Changed`] — never silently replaced. To
//! accept a legitimately rotated key, delete the line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use thiserror::Error;

use crate::identity::PublicKey;

/// Largest known-hosts file we read.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// How a server key was trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The key was already recorded for this host.
    Known,
    /// The host was unknown; its key is now recorded.
    FirstUse,
}

/// Why a known-hosts check failed.
#[derive(Debug, Error)]
pub enum KnownHostsError {
    /// The server presented a different key than the one recorded for it.
    #[error(
        "the key of {host} CHANGED: known {known}, presented {presented}; this may be an attack. If the server's key was rotated on purpose, remove its line from {path}"
    )]
    Changed {
        /// The host.
        host: String,
        /// The recorded key.
        known: PublicKey,
        /// The key presented now.
        presented: PublicKey,
        /// The known-hosts file.
        path: PathBuf,
    },
    /// The file could not be read or written.
    #[error("known-hosts file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the file is not `host key`.
    #[error("known-hosts file {path}, line {line}: expected `host:port <64 hex digits>`")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
    },
}

/// A known-hosts file. Checks within one process are serialized, so two first connections to the same
/// host cannot both append.
#[derive(Debug)]
pub struct KnownHosts {
    path: PathBuf,
    lock: Mutex<()>,
}

impl KnownHosts {
    /// A known-hosts store backed by `path` (created on first use).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KnownHosts {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key recorded for `host`, if any.
    pub fn get(&self, host: &str) -> Result<Option<PublicKey>, KnownHostsError> {
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.lookup(host)
    }

    /// Checks `presented` against the key recorded for `host`, recording it if the host is new.
    pub fn check_or_trust(
        &self,
        host: &str,
        presented: PublicKey,
    ) -> Result<Trust, KnownHostsError> {
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match self.lookup(host)? {
            Some(known) if known == presented => Ok(Trust::Known),
            Some(known) => Err(KnownHostsError::Changed {
                host: host.to_owned(),
                known,
                presented,
                path: self.path.clone(),
            }),
            None => {
                self.append(host, presented)?;
                tracing::warn!(host, key = %presented, file = %self.path.display(), "trusting new server key on first use");
                Ok(Trust::FirstUse)
            }
        }
    }

    fn io(&self, source: std::io::Error) -> KnownHostsError {
        KnownHostsError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn lookup(&self, host: &str) -> Result<Option<PublicKey>, KnownHostsError> {
        let text = match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
            Ok(meta) if meta.len() > MAX_FILE => {
                return Err(self.io(std::io::Error::other("file larger than 4 MiB")));
            }
            Ok(_) => std::fs::read_to_string(&self.path).map_err(|e| self.io(e))?,
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = || KnownHostsError::Malformed {
                path: self.path.clone(),
                line: i + 1,
            };
            let mut parts = line.split_whitespace();
            let (Some(name), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(malformed());
            };
            let key: PublicKey = key.parse().map_err(|_| malformed())?;
            if name == host {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    fn append(&self, host: &str, key: PublicKey) -> Result<(), KnownHostsError> {
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '#') {
            return Err(self.io(std::io::Error::other("host name not storable")));
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        writeln!(file, "{host} {key}").map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn trust_on_first_use_then_hard_failure_on_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = KnownHosts::new(dir.path().join("known_hosts"));
        let a = Identity::generate().public_key();
        let b = Identity::generate().public_key();
        assert_eq!(
            hosts.check_or_trust("h:1", a).expect("new"),
            Trust::FirstUse
        );
        assert_eq!(hosts.check_or_trust("h:1", a).expect("same"), Trust::Known);
        assert_eq!(
            hosts.check_or_trust("h:2", b).expect("other"),
            Trust::FirstUse
        );
        let err = hosts.check_or_trust("h:1", b).expect_err("changed");
        assert!(matches!(err, KnownHostsError::Changed { .. }));
        assert!(err.to_string().contains("CHANGED"));
        // Still the original key: nothing was replaced.
        assert_eq!(hosts.get("h:1").expect("get"), Some(a));
    }

    #[test]
    fn malformed_lines_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, "# c\nhost:1 nothex\n").expect("write");
        let hosts = KnownHosts::new(&path);
        let err = hosts.get("host:1").expect_err("malformed");
        assert!(matches!(err, KnownHostsError::Malformed { line: 2, .. }));
    }
}
