//! `/metrics` served over real HTTP on loopback, in Prometheus text format.

use tessera_session::metrics::{install_prometheus, metrics_router};
use tessera_session::{Registry, RegistryConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test]
async fn metrics_endpoint_serves_prometheus_text() {
    let handle = install_prometheus().expect("install recorder");
    let registry: Registry<()> = Registry::new(RegistryConfig::new("http-metrics"));
    let a = registry.create("a").expect("create");
    let _b = registry.create("b").expect("create");
    a.activate().expect("activate");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, metrics_router(handle)).await });

    let response = get(addr, "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("text/plain; version=0.0.4"), "{response}");
    assert!(
        response.contains("tessera_sessions_live{service=\"http-metrics\"} 2"),
        "{response}"
    );
    assert!(
        response.contains("tessera_sessions{service=\"http-metrics\",state=\"active\"} 1"),
        "{response}"
    );
    assert!(get(addr, "/health").await.ends_with("ok\n"));
    assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    server.abort();
}
