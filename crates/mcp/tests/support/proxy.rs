//! An HTTP proxy on a loopback port for a test, stopped and checked empty by `finish`.

#![allow(dead_code)]

use std::time::Duration;

use tessera_mcp::http::{HttpConfig, HttpProxy, Upstream};
use tessera_mcp::{McpConfig, Sessions};

use super::http::Http;

pub struct Running {
    pub proxy: HttpProxy,
    pub http: Http,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<tessera_session::ShutdownReport>>,
}

pub async fn start(upstream: Upstream) -> Running {
    start_with(HttpConfig::new(upstream), None).await
}

/// A proxy with this configuration, recording to `tape` if given.
pub async fn start_with(config: HttpConfig, tape: Option<tessera_mcp::tape::Tape>) -> Running {
    start_full(config, McpConfig::default(), tape).await
}

/// A proxy with this configuration and these session limits (deadline, pending), recording to `tape` if
/// given.
pub async fn start_full(
    config: HttpConfig,
    mcp: McpConfig,
    tape: Option<tessera_mcp::tape::Tape>,
) -> Running {
    let sessions = Sessions::new(mcp);
    let proxy = HttpProxy::new(config, sessions, tape).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = proxy.clone();
    let server = tokio::spawn(async move {
        serving
            .serve(
                listener,
                axum::Router::new(),
                async move {
                    let _ = stopped.await;
                },
                Duration::from_secs(2),
            )
            .await
    });
    Running {
        proxy,
        http: Http::new(url),
        stop,
        server,
    }
}

impl Running {
    pub async fn finish(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
        assert_eq!(self.proxy.sessions().registry().len(), 0);
        assert_eq!(self.proxy.mapped_sessions(), 0);
    }
}
