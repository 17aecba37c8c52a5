//! Process shutdown signals, for the binary's edge.

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM. Services stop accepting when it fires, then call
/// [`crate::Registry::shutdown`] with their grace period.
pub async fn signal() {
    listen().recv().await;
}

/// Installs the SIGINT and SIGTERM handlers now, before anything awaits them: from this call on, a signal
/// is caught and waits for [`Signals::recv`] instead of taking its default action (ending the process on
/// the spot — before, say, a child process was shut down). Needs a Tokio runtime.
pub fn listen() -> Signals {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }
    #[cfg(not(unix))]
    Signals {}
}

/// SIGINT and SIGTERM handlers installed by [`listen`].
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Completes on the first SIGINT or SIGTERM caught since [`listen`].
    pub async fn recv(self) {
        #[cfg(unix)]
        {
            let Signals {
                interrupt,
                terminate,
            } = self;
            let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => tracing::info!("SIGINT received, shutting down"),
                () = wait(terminate) => tracing::info!("SIGTERM received, shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            tracing::info!("Ctrl-C received, shutting down");
        }
    }
}
