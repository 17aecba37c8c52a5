//! A client's whole state in one file, sealed at rest: which relay (URL and pinned channel key), which
//! account, the device's channel private key, and its Olm state (account, sessions, pins, dedup window).
//! This is what `tessera chat --state FILE` reads and writes.
//!
//! ```text
//! file   = header || nonce (12) || ChaCha20-Poly1305(key, nonce, JSON state, aad = header)
//! header = "TSRC" || 0x02 (version) || kdf (1) || memory KiB (u32 BE) || passes (u32 BE) || salt (16)
//! kdf    = 1: key = Argon2id(passphrase, salt, memory, passes, 1 lane, 32 bytes)
//!          0: key = the 32 bytes of a key file (memory, passes and salt are zero)
//! ```
//!
//! The header is authenticated (it is the AEAD's associated data), so its parameters cannot be
//! weakened unnoticed. The salt is chosen when the file is created and kept; every save uses a new
//! random nonce. A save writes a temporary file in the same directory, syncs it, renames it over the
//! old one and syncs the directory: after a crash the file is the old state or the new one, never a
//! mix. On Unix the file is created with mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_channel::Identity;
use zeroize::Zeroizing;

use crate::e2e::state::{Snapshot, StateKey, open_bytes, seal_bytes};
use crate::e2e::{E2eError, OlmDevice};

const MAGIC: &[u8; 4] = b"TSRC";
const VERSION: u8 = 2;
const HEADER_LEN: usize = 4 + 1 + 1 + 4 + 4 + 16;
/// Argon2id memory cost in KiB (19 MiB, with 2 passes: the OWASP minimum for Argon2id).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Argon2id passes.
pub const ARGON2_PASSES: u32 = 2;
/// The most Argon2id memory (KiB) a state file may ask for when it is opened: 1 GiB. The header is
/// authenticated only after the key is derived, so without this bound a damaged or hostile file could make
/// `open` allocate terabytes or run for hours.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1 << 20;
/// The most Argon2id passes a state file may ask for when it is opened.
pub const MAX_ARGON2_PASSES: u32 = 16;
/// The largest state file read (64 MiB).
pub const MAX_STATE_FILE: u64 = 64 << 20;

/// A state file failure.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not a state file, or the key is wrong, or it was altered.
    #[error("{path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        source: E2eError,
    },
    /// `create` found a file already there.
    #[error("{0} already exists; refusing to overwrite a client state")]
    Exists(PathBuf),
}

/// How the state key is obtained.
pub enum Unlock {
    /// A passphrase, stretched with Argon2id.
    Passphrase(Zeroizing<Vec<u8>>),
    /// A 32-byte key (e.g. from a key file).
    Key(StateKey),
}

impl std::fmt::Debug for Unlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unlock::Passphrase(_) => "Unlock::Passphrase(<redacted>)",
            Unlock::Key(_) => "Unlock::Key(<redacted>)",
        })
    }
}

/// Which relay and which account and device: everything in the state but the Olm state.
pub struct Profile {
    /// The relay's URL, e.g. `ws://127.0.0.1:7400/`.
    pub server_url: String,
    /// The relay's channel key (64 hex digits), pinned at registration.
    pub server_key: String,
    /// The account name.
    pub username: String,
    /// The device's channel identity (its public key is the device id).
    pub identity: Identity,
}

/// A client's state: its profile and its Olm state.
#[derive(Debug)]
pub struct ClientState {
    /// Relay, account and channel identity.
    pub profile: Profile,
    /// The Olm state.
    pub olm: OlmDevice,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("server_url", &self.server_url)
            .field("username", &self.username)
            .field("device", &self.identity.public_key().to_string())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    server_url: String,
    server_key: String,
    username: String,
    device_secret: Zeroizing<String>,
    olm: Snapshot,
}

/// An open state file: its path and the key that seals it.
pub struct StateFile {
    path: PathBuf,
    header: [u8; HEADER_LEN],
    key: StateKey,
}

impl std::fmt::Debug for StateFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn header(kdf: u8, memory_kib: u32, passes: u32, salt: &[u8; 16]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(MAGIC);
    header[4] = VERSION;
    header[5] = kdf;
    header[6..10].copy_from_slice(&memory_kib.to_be_bytes());
    header[10..14].copy_from_slice(&passes.to_be_bytes());
    header[14..].copy_from_slice(salt);
    header
}

impl StateFile {
    /// A new state file at `path` (not written until [`StateFile::save`]); refuses an existing file.
    pub fn create(path: impl Into<PathBuf>, unlock: Unlock) -> Result<Self, StateFileError> {
        let path = path.into();
        if path.exists() {
            return Err(StateFileError::Exists(path));
        }
        let (header, key) = match unlock {
            Unlock::Key(key) => (header(0, 0, 0, &[0; 16]), key),
            Unlock::Passphrase(passphrase) => {
                let mut salt = [0u8; 16];
                rand::fill(&mut salt);
                let key =
                    StateKey::from_passphrase(&passphrase, &salt, ARGON2_MEMORY_KIB, ARGON2_PASSES)
                        .map_err(|source| StateFileError::State {
                            path: path.clone(),
                            source,
                        })?;
                (header(1, ARGON2_MEMORY_KIB, ARGON2_PASSES, &salt), key)
            }
        };
        Ok(StateFile { path, header, key })
    }

    /// Opens and decrypts the state file at `path`.
    pub fn open(
        path: impl Into<PathBuf>,
        unlock: Unlock,
    ) -> Result<(Self, ClientState), StateFileError> {
        let path = path.into();
        let io = |source| StateFileError::Io {
            path: path.clone(),
            source,
        };
        let bad = |reason: &str| StateFileError::State {
            path: path.clone(),
            source: E2eError::State(reason.to_owned()),
        };
        let size = std::fs::metadata(&path).map_err(io)?.len();
        if size > MAX_STATE_FILE {
            return Err(bad("larger than any state file"));
        }
        let bytes = std::fs::read(&path).map_err(io)?;
        if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
            return Err(bad("not a tessera chat state file"));
        }
        if bytes[4] != VERSION {
            return Err(bad("unknown state file version"));
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&bytes[..HEADER_LEN]);
        let be = |range: std::ops::Range<usize>| {
            let mut word = [0u8; 4];
            word.copy_from_slice(&header[range]);
            u32::from_be_bytes(word)
        };
        let key = match (header[5], unlock) {
            (0, Unlock::Key(key)) => key,
            (1, Unlock::Passphrase(passphrase)) => {
                let (memory, passes) = (be(6..10), be(10..14));
                if memory > MAX_ARGON2_MEMORY_KIB || passes > MAX_ARGON2_PASSES {
                    return Err(bad(
                        "the key derivation asks for more memory or passes than any state file uses",
                    ));
                }
                StateKey::from_passphrase(&passphrase, &header[14..], memory, passes).map_err(
                    |source| StateFileError::State {
                        path: path.clone(),
                        source,
                    },
                )?
            }
            (0, _) => {
                return Err(bad(
                    "this state is sealed with a key file, not a passphrase",
                ));
            }
            (1, _) => {
                return Err(bad(
                    "this state is sealed with a passphrase, not a key file",
                ));
            }
            _ => return Err(bad("unknown key derivation")),
        };
        let plaintext = open_bytes(&key, &bytes[HEADER_LEN..], &header).map_err(|source| {
            StateFileError::State {
                path: path.clone(),
                source,
            }
        })?;
        let stored: Stored =
            serde_json::from_slice(&plaintext).map_err(|_| bad("malformed state"))?;
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(stored.device_secret.as_bytes(), &mut secret[..])
            .map_err(|_| bad("malformed device key"))?;
        let state = ClientState {
            profile: Profile {
                server_url: stored.server_url,
                server_key: stored.server_key,
                username: stored.username,
                identity: Identity::from_private_key(&secret),
            },
            olm: OlmDevice::from_snapshot(stored.olm).map_err(|source| StateFileError::State {
                path: path.clone(),
                source,
            })?,
        };
        Ok((StateFile { path, header, key }, state))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals the profile and Olm state and replaces the file atomically (temporary file, fsync,
    /// rename, fsync of the directory).
    pub fn save(&self, profile: &Profile, olm: &OlmDevice) -> Result<(), StateFileError> {
        let stored = Stored {
            server_url: profile.server_url.clone(),
            server_key: profile.server_key.clone(),
            username: profile.username.clone(),
            device_secret: Zeroizing::new(hex::encode(profile.identity.expose_private())),
            olm: olm.snapshot(),
        };
        let plaintext =
            Zeroizing::new(
                serde_json::to_vec(&stored).map_err(|_| StateFileError::State {
                    path: self.path.clone(),
                    source: E2eError::State("cannot serialize".into()),
                })?,
            );
        let sealed =
            seal_bytes(&self.key, &self.header, &self.header, &plaintext).map_err(|source| {
                StateFileError::State {
                    path: self.path.clone(),
                    source,
                }
            })?;
        write_atomically(&self.path, &sealed).map_err(|source| StateFileError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ClientState {
        ClientState {
            profile: Profile {
                server_url: "ws://127.0.0.1:1/".into(),
                server_key: "00".repeat(32),
                username: "alice".into(),
                identity: Identity::generate(),
            },
            olm: OlmDevice::new(),
        }
    }

    #[test]
    fn passphrase_and_key_file_round_trip_and_refuse_the_wrong_secret() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("alice.state");
        let pass = || Unlock::Passphrase(Zeroizing::new(b"correct horse".to_vec()));
        let original = state();
        let file = StateFile::create(&path, pass()).expect("create");
        file.save(&original.profile, &original.olm).expect("save");
        assert!(matches!(
            StateFile::create(&path, pass()),
            Err(StateFileError::Exists(_))
        ));
        let bytes = std::fs::read(&path).expect("read");
        let secret = hex::encode(original.profile.identity.expose_private());
        assert!(!bytes.windows(8).any(|w| w == &secret.as_bytes()[..8]));
        assert!(!bytes.windows(5).any(|w| w == b"alice"));
        let (_, opened) = StateFile::open(&path, pass()).expect("open");
        assert_eq!(
            opened.profile.identity.public_key(),
            original.profile.identity.public_key()
        );
        assert_eq!(opened.olm.identity_key(), original.olm.identity_key());
        let wrong = Unlock::Passphrase(Zeroizing::new(b"wrong".to_vec()));
        assert!(StateFile::open(&path, wrong).is_err());
        assert!(StateFile::open(&path, Unlock::Key(StateKey::generate())).is_err());
        // A weakened header (fewer passes) no longer authenticates.
        let mut weakened = bytes.clone();
        weakened[13] = 1;
        std::fs::write(&path, &weakened).expect("write");
        assert!(StateFile::open(&path, pass()).is_err());
        // A header asking for terabytes of memory or billions of passes is refused before deriving.
        for (at, value) in [
            (6, u32::MAX),
            (10, u32::MAX),
            (6, MAX_ARGON2_MEMORY_KIB + 1),
        ] {
            let mut hostile = bytes.clone();
            hostile[at..at + 4].copy_from_slice(&value.to_be_bytes());
            std::fs::write(&path, &hostile).expect("write");
            let err = StateFile::open(&path, pass()).expect_err("refused");
            assert!(err.to_string().contains("more memory or passes"), "{err}");
        }

        let keyed = dir.path().join("keyed.state");
        let key = [7u8; 32];
        let file = StateFile::create(&keyed, Unlock::Key(StateKey::from_bytes(key))).expect("c");
        file.save(&original.profile, &original.olm).expect("save");
        let (_, opened) =
            StateFile::open(&keyed, Unlock::Key(StateKey::from_bytes(key))).expect("open");
        assert_eq!(opened.profile.username, "alice");
        assert!(StateFile::open(&keyed, pass()).is_err());
    }
}
