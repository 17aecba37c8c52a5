//! A server run as a child process over stdio: its stdin has one writer, its stdout is read as lines, its
//! stderr is passed through, and it is shut down as the spec says — close its stdin, wait, SIGTERM, wait,
//! SIGKILL.

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio_util::codec::FramedRead;

use crate::error::McpError;
use crate::lines::{DEFAULT_MAX_LINE, LineCodec};
use crate::outbox::{LineTx, LineWriter};
use tessera_session::Session;

/// How to start and stop the server.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The program.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// How long to wait after closing stdin, and again after SIGTERM (default 2 s).
    pub grace: Duration,
    /// The longest line accepted from its stdout.
    pub max_line: usize,
    /// Most messages queued for its stdin.
    pub queue: usize,
    /// Run on the command just before it is spawned (default none): for what this crate, which has no
    /// unsafe code, cannot do itself — the `tessera` binary has the kernel signal the child when the
    /// proxy dies, which must be asked for between fork and exec.
    pub prepare: Option<fn(&mut std::process::Command)>,
}

impl ChildSpec {
    /// A spec from a command line: program first.
    pub fn from_command(command: &[OsString]) -> Result<ChildSpec, McpError> {
        let (program, args) = command.split_first().ok_or(McpError::NoCommand)?;
        Ok(ChildSpec {
            program: program.clone(),
            args: args.to_vec(),
            grace: Duration::from_secs(2),
            max_line: DEFAULT_MAX_LINE,
            queue: 1024,
            prepare: None,
        })
    }
}

/// A running child server.
#[derive(Debug)]
pub struct Child {
    child: tokio::process::Child,
    stdin: Option<LineWriter>,
    grace: Duration,
}

/// Starts the server in its own process group (so signals reach wrappers like `npx` and what they start).
/// Its stdin writer is a task of `session`; its stdout comes back as a line stream.
pub fn spawn<R: Send + 'static>(
    spec: &ChildSpec,
    session: &Session<R>,
) -> Result<(Child, LineTx, FramedRead<ChildStdout, LineCodec>), McpError> {
    let (mut child, stdin, reader) = spawn_raw(spec)?;
    let (writer, input) = LineWriter::spawn(session, stdin, spec.queue)?;
    child.stdin = Some(writer);
    Ok((child, input, reader))
}

/// [`spawn`], but the caller owns the child's stdin (and closes it before [`Child::shutdown`]): for one
/// task that writes into it straight through ([`crate::outbox::LineSink`]).
pub fn spawn_raw(
    spec: &ChildSpec,
) -> Result<(Child, ChildStdin, FramedRead<ChildStdout, LineCodec>), McpError> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(prepare) = spec.prepare {
        prepare(command.as_std_mut());
    }
    let mut child = command
        .spawn()
        .map_err(|e| McpError::Spawn(spec.program.to_string_lossy().into_owned(), e))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(McpError::Spawn(
            spec.program.to_string_lossy().into_owned(),
            std::io::Error::other("no stdio pipes"),
        ));
    };
    let reader = FramedRead::new(stdout, LineCodec::new(spec.max_line));
    Ok((
        Child {
            child,
            stdin: None,
            grace: spec.grace,
        },
        stdin,
        reader,
    ))
}

impl Child {
    /// The child's process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the child to exit by itself.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Stops the child as the spec says: close its stdin and wait up to the grace period; then SIGTERM and
    /// wait again; then SIGKILL. Returns its exit status.
    pub async fn shutdown(mut self) -> std::io::Result<ExitStatus> {
        if let Some(stdin) = self.stdin.take() {
            // Write what is queued, then close the pipe; a child that does not read gets no longer than the grace.
            let _ = tokio::time::timeout(self.grace, stdin.finish()).await;
        }
        if let Ok(status) = tokio::time::timeout(self.grace, self.child.wait()).await {
            return status;
        }
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            tracing::debug!(
                pid = pid.as_raw_nonzero().get(),
                "child ignored stdin EOF: SIGTERM"
            );
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
            if let Ok(status) = tokio::time::timeout(self.grace, self.child.wait()).await {
                return status;
            }
        }
        tracing::debug!("child ignored SIGTERM: SIGKILL");
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        self.child.kill().await?;
        self.child.wait().await
    }
}
