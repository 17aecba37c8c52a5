//! Logging set-up: `tracing` with the `RUST_LOG` filter, as text or JSON lines on stderr.
//!
//! Lines reach stderr through a bounded queue and a thread of their own ([`LogQueue`]): a slow or full
//! stderr (a pipe nobody reads) never stalls a runtime worker — with `mcp serve` in front of a command
//! there is only one. Past [`QUEUED_LINES`] waiting lines, new ones are dropped and counted, and the
//! count is written once stderr takes lines again.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Most log lines waiting for stderr.
pub const QUEUED_LINES: usize = 4096;

/// The longest log line kept whole: a longer one is cut here and marked. Fields can carry what a peer
/// sent (a JSON-RPC id or method of up to the message limit), and the queue must stay bounded in bytes:
/// at most [`QUEUED_LINES`] × 16 KiB = 64 MiB.
pub const MAX_LINE: usize = 16 * 1024;

/// What ends a line cut at [`MAX_LINE`].
const CUT: &[u8] = b" [...cut]\n";

/// How long [`Flush`] waits for the queued lines to be written at exit.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Item {
    Line(Vec<u8>),
    /// Everything queued before it is written: say so on the channel.
    Flush(SyncSender<()>),
}

/// The writer side of the log queue: each event's line is formatted into a buffer of its own and
/// queued whole when the event is done.
#[derive(Clone)]
pub struct LogQueue {
    queue: SyncSender<Item>,
    dropped: Arc<AtomicU64>,
}

/// Writes queued lines to `out` until every [`LogQueue`] is gone, noting dropped lines as they occur.
fn drain(items: Receiver<Item>, dropped: Arc<AtomicU64>, mut out: impl Write) {
    for item in items {
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                out,
                "tessera: {lost} log line(s) dropped: stderr was not read fast enough"
            );
        }
        match item {
            Item::Line(line) => {
                let _ = out.write_all(&line);
            }
            Item::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
        }
    }
}

impl LogQueue {
    /// A queue of at most `capacity` lines and the thread writing them to `out`.
    pub fn spawn(capacity: usize, out: impl Write + Send + 'static) -> std::io::Result<Self> {
        let (queue, items) = sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("tessera-log".into())
            .spawn(move || drain(items, counter, out))?;
        Ok(LogQueue { queue, dropped })
    }

    /// A handle that writes out what is queued when asked (at exit).
    pub fn flush_handle(&self) -> Flush {
        Flush {
            queue: self.queue.clone(),
        }
    }
}

/// Waits, at most [`FLUSH_WAIT`], for the lines queued so far to be written.
pub struct Flush {
    queue: SyncSender<Item>,
}

impl Flush {
    /// Blocks until the lines queued before this call are written, or the wait is over (a stderr
    /// nobody reads must not keep the process from exiting).
    pub fn flush(&self) {
        let deadline = std::time::Instant::now() + FLUSH_WAIT;
        let (done, written) = sync_channel(1);
        let mut item = Item::Flush(done);
        loop {
            match self.queue.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    // The queue is full: stderr is slow or not read. Wait for room, not past the deadline.
                    if std::time::Instant::now() >= deadline {
                        return;
                    }
                    item = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let _ = written.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }
}

/// One event's line, queued whole when dropped.
pub struct QueuedLine {
    line: Vec<u8>,
    /// The line reached [`MAX_LINE`] and was cut: the rest of the event is ignored.
    cut: bool,
    queue: SyncSender<Item>,
    dropped: Arc<AtomicU64>,
}

impl Write for QueuedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.cut {
            return Ok(bytes.len());
        }
        let room = MAX_LINE.saturating_sub(self.line.len());
        if bytes.len() <= room {
            self.line.extend_from_slice(bytes);
        } else {
            // Past the limit: keep the head, mark the cut, ignore the rest of this event's bytes.
            self.line
                .extend_from_slice(bytes.get(..room).unwrap_or_default());
            self.line.extend_from_slice(CUT);
            self.cut = true;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.line);
        match self.queue.try_send(Item::Line(line)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for LogQueue {
    type Writer = QueuedLine;

    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine {
            line: Vec::new(),
            cut: false,
            queue: self.queue.clone(),
            dropped: self.dropped.clone(),
        }
    }
}

/// Installs the global subscriber, writing through a [`LogQueue`] to stderr. `RUST_LOG` picks the
/// levels (default: `default_level`). Call [`Flush::flush`] on the result before exiting.
pub fn init(format: LogFormat, default_level: &str) -> anyhow::Result<Flush> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let queue = LogQueue::spawn(QUEUED_LINES, std::io::stderr())?;
    let flush = queue.flush_handle();
    // Colours for a person at a terminal only: a file or a pipe (a supervisor, a log collector) gets
    // plain text.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(queue);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!(e))?;
    Ok(flush)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::LogQueue;

    /// A stderr that takes nothing until released, then keeps what it was given.
    #[derive(Clone)]
    struct Stalled {
        gate: Arc<Mutex<()>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().map_err(|_| std::io::ErrorKind::Other)?;
            self.written
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Logging into a stderr that does not take lines never blocks: lines past the queue are dropped
    /// and counted; once stderr takes lines again, the queued ones and the count are written, in order.
    #[test]
    fn a_stalled_stderr_never_blocks_a_logger_and_drops_are_counted() {
        let out = Stalled {
            gate: Arc::new(Mutex::new(())),
            written: Arc::new(Mutex::new(Vec::new())),
        };
        let closed = out.gate.lock().expect("gate");
        let queue = LogQueue::spawn(4, out.clone()).expect("spawn");
        // The writer thread takes a line and waits at the gate; four fill the queue; the rest are
        // dropped — and none of the ten blocks this thread.
        for i in 0..10 {
            let mut line = queue.make_writer();
            writeln!(line, "line {i}").expect("buffered");
        }
        drop(closed);
        queue.flush_handle().flush();
        let written =
            String::from_utf8(out.written.lock().expect("written").clone()).expect("utf8");
        let lines: Vec<&str> = written.lines().collect();
        // At most one line in the writer's hands and four queued were kept, in order; the rest dropped.
        let kept: Vec<usize> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
            .collect();
        assert!((4..=5).contains(&kept.len()), "{written}");
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "{written}");
        assert_eq!(kept[0], 0, "{written}");
        let note = format!("tessera: {} log line(s) dropped", 10 - kept.len());
        assert!(
            lines.iter().any(|l| l.starts_with(&note)),
            "{note}: {written}"
        );
    }

    /// A line longer than the limit (a field a peer chose) is cut and marked, so the queue stays bounded
    /// in bytes; a line at the limit is kept whole.
    #[test]
    fn a_long_line_is_cut_at_the_limit() {
        let out = Stalled {
            gate: Arc::new(Mutex::new(())),
            written: Arc::new(Mutex::new(Vec::new())),
        };
        let queue = LogQueue::spawn(4, out.clone()).expect("spawn");
        let mut line = queue.make_writer();
        line.write_all(&vec![b'a'; super::MAX_LINE - 1])
            .expect("head");
        line.write_all(b"\n").expect("end");
        drop(line);
        let mut line = queue.make_writer();
        line.write_all(&vec![b'b'; 10 * super::MAX_LINE])
            .expect("long");
        line.write_all(b"tail\n").expect("tail");
        drop(line);
        queue.flush_handle().flush();
        let written = out.written.lock().expect("written").clone();
        let text = String::from_utf8(written).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "two lines");
        assert_eq!(lines[0].len(), super::MAX_LINE - 1);
        assert!(lines[1].ends_with(" [...cut]"), "marked");
        assert!(lines[1].len() < super::MAX_LINE + 16);
        assert!(!lines[1].contains("tail"));
    }
}
