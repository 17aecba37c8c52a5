//! `connect`: a stdio client bridged to server-everything's Streamable HTTP mode.

mod support;

use serde_json::json;
use support::http::server_everything_http;
use tessera_mcp::McpConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_client_talks_to_a_streamable_http_server() {
    let upstream = server_everything_http().await;
    let (mut client, bridge, sessions) =
        support::client::bridge(&upstream.url, McpConfig::default());

    let init = client.initialize().await;
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        "mcp-servers/everything"
    );
    let echo = client
        .request(
            json!(1),
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "over http"}}),
        )
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "Echo: over http");
    let pong = client.request(json!("p"), "ping", json!({})).await;
    assert_eq!(pong["result"], json!({}));
    // A malformed line is answered locally.
    client.send_raw("{oops").await;
    assert_eq!(
        client.response(&serde_json::Value::Null).await["error"]["code"],
        -32700
    );

    client.close();
    let frames = bridge.await.unwrap();
    assert!(frames >= 7, "{frames}");
    assert_eq!(sessions.registry().len(), 0);
    assert_eq!(sessions.registry().pending_len(), 0);
}
