//! Identities: a peer *is* its Noise static key (X25519). Key files and their checks.
//!
//! An [`Identity`] holds the private key; it is zeroized on drop (through [`Secret`]) and its `Debug` shows
//! only the public half. A [`PublicKey`] is what peers pin and allow-list; it prints as 64 hex digits.
//!
//! Key file format (text, written with mode 0600 by [`Identity::save`] / `tessera keygen`):
//!
//! ```text
//! # tessera channel identity (Noise X25519 static key). Keep this file secret.
//! private-key: <64 hex digits>
//! public-key: <64 hex digits>
//! ```
//!
//! [`Identity::load`] refuses a file that group or others can read or write (like ssh does with its keys),
//! a file without a valid `private-key` line, and a `public-key` line that does not match the private key.
//!
//! Note: `snow` copies the private key into its own handshake state, which it does not zeroize; our copy is.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use tessera_session::Secret;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::frame::KEY_LEN;

/// A peer's identity: its X25519 static public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    /// Copies a key from a slice; `None` unless it is 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(PublicKey)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Text that is not a public key (64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a public key is 64 hex digits (32 bytes)")]
pub struct ParseKeyError;

impl FromStr for PublicKey {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; KEY_LEN];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| ParseKeyError)?;
        Ok(PublicKey(out))
    }
}

/// Largest key file [`Identity::load`] reads: a saved one is under 200 bytes, comments have room, and a
/// huge file (a wrong path, a device) is refused without being read whole.
pub const MAX_KEY_FILE_LEN: usize = 4096;

/// Why a key file could not be used.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is readable or writable by group or others.
    #[error(
        "key file {path} has mode {mode:o}: it must not be accessible to group or others (run `chmod 600 {path}`)"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file exists already (keygen never overwrites a key).
    #[error("key file {0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// The file does not have the documented format.
    #[error("key file {path} is not a tessera identity: {problem}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: &'static str,
    },
}

/// A private identity: the X25519 static key pair of this peer. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct Identity {
    private: Secret<KEY_LEN>,
    public: PublicKey,
}

impl Identity {
    /// A fresh identity from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Self::from_secret(Secret::random())
    }

    /// The identity with this private key.
    pub fn from_private_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self::from_secret(Secret::new(bytes))
    }

    /// The identity with this private key, copied straight from the caller's (zeroizing) buffer to the
    /// heap: unlike [`Identity::from_private_bytes`], no copy is left on the stack.
    pub fn from_private_key(bytes: &[u8; KEY_LEN]) -> Self {
        Self::from_secret(Secret::copy_from(bytes))
    }

    fn from_secret(private: Secret<KEY_LEN>) -> Self {
        let public = derive_public(private.expose_secret());
        Identity { private, public }
    }

    /// The public half, which peers pin.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The raw private key, for handing to Noise. Named so that every use stands out.
    pub fn expose_private(&self) -> &[u8; KEY_LEN] {
        self.private.expose_secret()
    }

    /// Loads an identity from a key file, checking permissions and format.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        check_permissions(path)?;
        let malformed = |problem| IdentityError::Malformed {
            path: path.to_owned(),
            problem,
        };
        // Read at most one byte past the limit, into a buffer that never grows (no copy of the key is
        // left behind by a reallocation).
        let mut text = Zeroizing::new(String::with_capacity(MAX_KEY_FILE_LEN + 1));
        std::fs::File::open(path)
            .and_then(|file| {
                file.take(MAX_KEY_FILE_LEN as u64 + 1)
                    .read_to_string(&mut text)
            })
            .map_err(io)?;
        if text.len() > MAX_KEY_FILE_LEN {
            return Err(malformed("larger than 4096 bytes"));
        }
        let mut private = None;
        let mut public = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(value) = line.strip_prefix("private-key:") {
                let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
                hex::decode_to_slice(value.trim(), &mut bytes[..])
                    .map_err(|_| malformed("the private-key line is not 64 hex digits"))?;
                private = Some(Secret::new(*bytes));
            } else if let Some(value) = line.strip_prefix("public-key:") {
                public = Some(
                    value
                        .parse::<PublicKey>()
                        .map_err(|_| malformed("the public-key line is not 64 hex digits"))?,
                );
            } else {
                return Err(malformed("unexpected line"));
            }
        }
        let identity = Self::from_secret(private.ok_or_else(|| malformed("no private-key line"))?);
        if public.is_some_and(|p| p != identity.public) {
            return Err(malformed(
                "the public-key line does not match the private key",
            ));
        }
        Ok(identity)
    }

    /// Writes the identity to a new key file with mode 0600. Never overwrites an existing file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), IdentityError> {
        let path = path.as_ref();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                IdentityError::Exists(path.to_owned())
            } else {
                IdentityError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let text = Zeroizing::new(format!(
            "# tessera channel identity (Noise X25519 static key). Keep this file secret.\n\
             private-key: {}\npublic-key: {}\n",
            hex::encode(self.private.expose_secret()),
            self.public
        ));
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| IdentityError::Io {
                path: path.to_owned(),
                source,
            })
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .field("private", &"<redacted>")
            .finish()
    }
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> Result<(), IdentityError> {
    Ok(())
}

/// X25519 base-point multiplication through snow's own resolver, so the public key is computed by exactly the
/// code that will use the private key.
fn derive_public(private: &[u8; KEY_LEN]) -> PublicKey {
    let mut out = [0u8; KEY_LEN];
    if let Some(mut dh) = DefaultResolver.resolve_dh(&DHChoice::Curve25519) {
        dh.set(private);
        out.copy_from_slice(&dh.pubkey()[..KEY_LEN]);
    }
    PublicKey(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_private_key() {
        let identity = Identity::from_private_bytes([0xAB; 32]);
        let text = format!("{identity:?} {identity:#?}");
        assert!(!text.contains(&hex::encode([0xAB; 32])), "{text}");
        assert!(!text.to_lowercase().contains("abab"), "{text}");
        assert!(text.contains("<redacted>"));
        assert!(text.contains(&identity.public_key().to_string()));
    }

    #[test]
    fn public_key_matches_rfc7748_vector() {
        // RFC 7748 section 6.1, Alice's key pair.
        let private =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .expect("hex");
        let private: [u8; KEY_LEN] = private.try_into().expect("32");
        let identity = Identity::from_private_bytes(private);
        assert_eq!(
            identity.public_key().to_string(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        let by_reference = Identity::from_private_key(&private);
        assert_eq!(by_reference.public_key(), identity.public_key());
        assert_eq!(by_reference.expose_private(), &private);
    }

    #[test]
    fn save_load_round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id.key");
        let identity = Identity::generate();
        identity.save(&path).expect("save");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = Identity::load(&path).expect("load");
        assert_eq!(loaded.public_key(), identity.public_key());
        assert!(matches!(
            identity.save(&path),
            Err(IdentityError::Exists(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn rejects_world_readable_and_malformed_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id.key");
        Identity::generate().save(&path).expect("save");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = Identity::load(&path).expect_err("world-readable");
        assert!(err.to_string().contains("chmod 600"), "{err}");

        let bad = dir.path().join("bad.key");
        for (content, needle) in [
            ("private-key: zz\n", "64 hex"),
            ("hello\n", "unexpected line"),
            ("# nothing\n", "no private-key"),
            (
                "private-key: 0000000000000000000000000000000000000000000000000000000000000001\npublic-key: 0000000000000000000000000000000000000000000000000000000000000000\n",
                "does not match",
            ),
        ] {
            let _ = std::fs::remove_file(&bad);
            std::fs::write(&bad, content).expect("write");
            std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            let err = Identity::load(&bad).expect_err(content);
            assert!(err.to_string().contains(needle), "{err}");
        }
        assert!(matches!(
            Identity::load(dir.path().join("missing")),
            Err(IdentityError::Io { .. })
        ));
        // A valid key after a long comment: refused by size, not read whole.
        let long = dir.path().join("long.key");
        let saved = dir.path().join("saved.key");
        Identity::generate().save(&saved).expect("save");
        let mut text = format!("# {}\n", "x".repeat(MAX_KEY_FILE_LEN));
        text.push_str(&std::fs::read_to_string(&saved).expect("read"));
        std::fs::write(&long, text).expect("write");
        std::fs::set_permissions(&long, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = Identity::load(&long).expect_err("too large");
        assert!(err.to_string().contains("larger than 4096 bytes"), "{err}");
        assert!(Identity::load(&saved).is_ok());
    }

    #[test]
    fn public_keys_parse_and_print_as_hex() {
        let key = Identity::generate().public_key();
        assert_eq!(key.to_string().parse::<PublicKey>(), Ok(key));
        assert_eq!("abc".parse::<PublicKey>(), Err(ParseKeyError));
    }
}
