//! This process's stdin and stdout as non-blocking pipes on the Tokio reactor.
//!
//! Tokio's own `stdin()`/`stdout()` run every read and write on the blocking thread pool, a thread hand-off
//! per message. When the descriptor is a pipe (as it usually is under an MCP client), [`PipeIn`] and
//! [`PipeOut`] poll a duplicate of it like a socket; its original flags are restored when they are dropped
//! (the flags live on the open file description, which the parent may share). Not a pipe (a terminal, a
//! file, a socket): the constructors fail, and the caller falls back to Tokio's.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

/// Puts the descriptor's original flags back.
#[derive(Debug)]
struct Restore {
    fd: OwnedFd,
    flags: OFlags,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = fcntl_setfl(&self.fd, self.flags);
    }
}

fn prepare(fd: impl AsFd) -> io::Result<(OwnedFd, Restore)> {
    let fd = fd.as_fd();
    let flags = fcntl_getfl(fd)?;
    Ok((
        rustix::io::dup(fd)?,
        Restore {
            fd: rustix::io::dup(fd)?,
            flags,
        },
    ))
}

/// This process's stdin, polled on the reactor.
#[derive(Debug)]
pub struct PipeIn {
    inner: pipe::Receiver,
    _restore: Restore,
}

impl PipeIn {
    /// Stdin, if it is a pipe.
    pub fn stdin() -> io::Result<PipeIn> {
        let (fd, restore) = prepare(io::stdin())?;
        Ok(PipeIn {
            inner: pipe::Receiver::from_owned_fd(fd)?,
            _restore: restore,
        })
    }
}

/// This process's stdout, polled on the reactor.
#[derive(Debug)]
pub struct PipeOut {
    inner: pipe::Sender,
    _restore: Restore,
}

impl PipeOut {
    /// Stdout, if it is a pipe.
    pub fn stdout() -> io::Result<PipeOut> {
        let (fd, restore) = prepare(io::stdout())?;
        Ok(PipeOut {
            inner: pipe::Sender::from_owned_fd(fd)?,
            _restore: restore,
        })
    }
}

impl AsyncRead for PipeIn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PipeOut {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
