//! Reading a small secret file (a key, a passphrase, an invite token, request headers) the way
//! `tessera_channel::Identity::load` reads a channel key: refused if group or others may read or write it,
//! bounded in size, into a buffer that is zeroized on every path and never reallocated (no stray copy of
//! the secret), and with errors that name the problem but never quote the file's bytes.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use zeroize::Zeroizing;

/// The largest key, passphrase or token file read: a few KiB.
pub const MAX_SECRET_FILE_LEN: usize = 4096;

/// The contents of `path` (a `what`, for messages: "key file", "signing key", ...), at most `max` bytes.
/// Refuses a file that group or others can access (mode & 0o077, as `Identity::load` does), a file larger
/// than `max`, and anything but a regular file.
pub fn read_private(path: &Path, max: usize, what: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("opening the {what} {}", path.display()))?;
    // The mode of the file opened, not of whatever the path names a moment later.
    let meta = file
        .metadata()
        .with_context(|| format!("reading the {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("the {what} {} is not a regular file", path.display());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "the {what} {} is open to group or others (mode {mode:o}); it must be private: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
    // One byte past the limit tells an oversized file; the buffer never grows.
    let mut buf = Zeroizing::new(vec![0u8; max + 1]);
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("reading the {what} {}", path.display()));
            }
        }
    }
    if len > max {
        bail!("the {what} {} is larger than {max} bytes", path.display());
    }
    // Shortening keeps the capacity; Zeroizing clears all of it when dropped.
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tessera-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn a_private_file_is_read() {
        let path = write("ok", b"secret\n", 0o600);
        let read = read_private(&path, 16, "key file").expect("read");
        assert_eq!(&read[..], b"secret\n");
        let exact = write("exact", &[7u8; 16], 0o400);
        assert_eq!(
            read_private(&exact, 16, "key file").expect("read").len(),
            16
        );
    }

    #[test]
    fn a_file_open_to_others_is_refused_without_its_contents() {
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let path = write(&format!("open-{mode:o}"), b"SECRETBYTES", mode);
            let error = format!(
                "{:#}",
                read_private(&path, 64, "key file").expect_err("refused")
            );
            assert!(error.contains("chmod 600"), "{error}");
            assert!(!error.contains("SECRET"), "{error}");
        }
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let path = write("big", &[b'a'; 17], 0o600);
        let error = format!(
            "{:#}",
            read_private(&path, 16, "key file").expect_err("refused")
        );
        assert!(error.contains("larger than 16 bytes"), "{error}");
        assert!(!error.contains("aaaa"), "{error}");
    }
}
