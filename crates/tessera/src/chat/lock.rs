//! The chat state lock: an advisory `flock(2)` on `STATE.lock`, held for the life of the command.
//!
//! The kernel releases the lock when the process dies (kill -9 included), so a lock file left behind never
//! locks anyone out, and two processes can never both hold it (the kernel decides, not a process id read
//! from the file, which can be stale or reused, e.g. PID 1 in a container). The file itself stays; it
//! holds the id of the last process that took the lock, for the error message only.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Holds an exclusive lock on `STATE.lock` while a command uses the state, so that two commands never
/// write the same state file (the last writer would drop the other's Olm sessions). Released when
/// dropped, or by the kernel when the process ends in any way.
#[derive(Debug)]
pub struct StateLock {
    // Closing the file releases the lock.
    _file: std::fs::File,
}

/// The lock file's path for a state file: `STATE.lock`.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut path = state.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

impl StateLock {
    /// Takes the lock of `state`, or fails at once if another process (or another open of the lock
    /// file in this one) holds it.
    pub fn take(state: &Path) -> anyhow::Result<Self> {
        let path = lock_path(state);
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if !try_lock(&file).with_context(|| format!("locking {}", path.display()))? {
            let mut holder = String::new();
            let _ = (&file).take(32).read_to_string(&mut holder);
            let holder = holder.trim();
            let by = if !holder.is_empty() && holder.bytes().all(|b| b.is_ascii_digit()) {
                format!(" by process {holder}")
            } else {
                String::new()
            };
            bail!(
                "{} is in use{by} (another tessera chat command)",
                state.display()
            );
        }
        // For people looking at the file: who holds it. Best effort; the lock is what counts.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()));
        Ok(StateLock { _file: file })
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` if someone else holds the lock.
#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a file descriptor this `File` owns and keeps open for the call.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result == 0 {
            return Ok(true);
        }
        let error = std::io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(error),
        }
    }
}

/// Without flock, no lock (tessera targets Linux).
#[cfg(not(unix))]
fn try_lock(_file: &std::fs::File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_state(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tessera-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join("s.state")
    }

    #[test]
    fn a_second_taker_is_refused_while_the_first_holds_it() {
        let state = temp_state("held");
        let first = StateLock::take(&state).expect("first");
        // flock is per open file description: a second open, even in this process, is refused.
        let error = StateLock::take(&state).expect_err("second");
        let text = error.to_string();
        assert!(text.contains("in use"), "{text}");
        assert!(
            text.contains(&std::process::id().to_string()),
            "names the holder: {text}"
        );
        drop(first);
        let _again = StateLock::take(&state).expect("free once the first is dropped");
    }

    #[test]
    fn a_lock_file_left_behind_locks_nobody_out() {
        let state = temp_state("stale");
        // What a killed holder leaves: the file, with a process id that may even be alive (PID 1).
        std::fs::write(lock_path(&state), "1").expect("stale lock");
        let _lock = StateLock::take(&state).expect("a stale file is no lock");
        let now = std::fs::read_to_string(lock_path(&state)).expect("lock file");
        assert_eq!(now, std::process::id().to_string());
    }
}
