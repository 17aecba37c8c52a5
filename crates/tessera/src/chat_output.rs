//! `tessera chat listen --output FILE`: messages appended to a file as JSON lines, each **exactly once**,
//! even when the process is killed at any point.
//!
//! Per message, in this order: append its line (one write, then fsync), save the state, acknowledge.
//! * Killed before the line is complete: the message was neither saved nor acknowledged, so the relay
//!   delivers it again and it is appended then. A line cut short by the kill is removed when the file is
//!   opened again.
//! * Killed after the append, before the save: the relay delivers it again and the saved (older) state
//!   decrypts it again; the file's last line already names it (`from_device`, `message_id`), so it is
//!   not appended twice (one message is handled at a time, so only the last line can be in this state).
//! * Killed after the save, before the acknowledgment: the saved dedup window drops the redelivery.
//!
//! Printing to stdout cannot be read back, so there the guarantee is at-least-once in one window: a kill
//! between printing a line and saving the state prints it again after the restart (scripts can drop
//! it by `message_id`); see docs/relay.md.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};

/// How much of the file's end is read to find its last line: a line holds one message, under the
/// channel's 1 MiB limit even with JSON escaping.
const TAIL: u64 = 8 * 1024 * 1024;

/// The output file, opened for appending, with the message its last complete line names.
pub(crate) struct OutputFile {
    file: File,
    last: Option<(String, String)>,
}

impl OutputFile {
    /// Opens (creating, mode 0600) `path`, removes a line cut short at its end, and reads the last line.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        let context = || format!("output file {}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .with_context(context)?;
        let len = file.metadata().with_context(context)?.len();
        let start = len.saturating_sub(TAIL);
        file.seek(SeekFrom::Start(start)).with_context(context)?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).with_context(context)?;
        let complete = match tail.iter().rposition(|b| *b == b'\n') {
            Some(end) => end + 1,
            None if start > 0 => bail!("{}: its last line is too long", path.display()),
            None => 0,
        };
        if complete < tail.len() {
            // A line cut short: its message was not acknowledged, and comes again.
            let keep = start + u64::try_from(complete).unwrap_or(u64::MAX);
            file.set_len(keep).with_context(context)?;
            file.sync_data().with_context(context)?;
            tracing::warn!(path = %path.display(), "removed an incomplete last line");
        }
        let lines = &tail[..complete.saturating_sub(1)];
        let last_line = lines.rsplit(|b| *b == b'\n').next().unwrap_or_default();
        let last = serde_json::from_slice::<serde_json::Value>(last_line)
            .ok()
            .and_then(|v| {
                let device = v.get("from_device")?.as_str()?.to_owned();
                let id = v.get("message_id")?.as_str()?.to_owned();
                Some((device, id))
            });
        Ok(OutputFile { file, last })
    }

    /// Whether the file's last line is this message (appended before a kill that came before the save).
    pub(crate) fn holds(&self, from_device: &str, message_id: &str) -> bool {
        self.last
            .as_ref()
            .is_some_and(|(d, m)| d == from_device && m == message_id)
    }

    /// Appends `line` (one JSON object, no newline inside) for the message and makes it durable.
    pub(crate) fn append(
        &mut self,
        line: &str,
        from_device: &str,
        message_id: &str,
    ) -> anyhow::Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .context("writing the output file")?;
        self.file.sync_data().context("syncing the output file")?;
        self.last = Some((from_device.to_owned(), message_id.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(device: &str, id: &str, text: &str) -> String {
        serde_json::json!({"from": "alice", "from_device": device, "message_id": id, "text": text})
            .to_string()
    }

    #[test]
    fn the_last_line_is_recognised_and_a_cut_line_removed() {
        let dir = std::env::temp_dir().join(format!("tessera-chat-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("out.jsonl");
        let mut out = OutputFile::open(&path).expect("new");
        assert!(!out.holds("d1", "m1"));
        out.append(&line("d1", "m1", "one"), "d1", "m1")
            .expect("m1");
        out.append(&line("d1", "m2", "two\nlines"), "d1", "m2")
            .expect("m2");
        drop(out);
        // Reopened (a restart): the last line names m2, not m1.
        let out = OutputFile::open(&path).expect("reopen");
        assert!(out.holds("d1", "m2"));
        assert!(!out.holds("d1", "m1") && !out.holds("d2", "m2"));
        drop(out);
        // A kill in the middle of a write leaves part of a line: it is removed on open.
        let mut raw = OpenOptions::new().append(true).open(&path).expect("raw");
        raw.write_all(br#"{"from":"alice","from_dev"#).expect("cut");
        drop(raw);
        let mut out = OutputFile::open(&path).expect("reopen");
        assert!(out.holds("d1", "m2"));
        out.append(&line("d1", "m3", "three"), "d1", "m3")
            .expect("m3");
        let text = std::fs::read_to_string(&path).expect("read");
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["message_id"].as_str().expect("id").to_owned()
            })
            .collect();
        assert_eq!(ids, ["m1", "m2", "m3"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
