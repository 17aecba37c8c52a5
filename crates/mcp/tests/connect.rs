//! `connect`: a stdio client bridged to server-everything's Streamable HTTP mode.

mod support;

use serde_json::json;
use support::client::LineClient;
use support::http::server_everything_http;
use tessera_mcp::{McpConfig, Sessions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_client_talks_to_a_streamable_http_server() {
    let upstream = server_everything_http().await;
    let sessions = Sessions::new(McpConfig::default());
    let (client_w, bridge_in) = tokio::io::duplex(1 << 16);
    let (bridge_out, client_r) = tokio::io::duplex(1 << 16);
    let s = sessions.clone();
    let url = upstream.url.clone();
    let bridge = tokio::spawn(async move {
        tessera_mcp::connect::run(&s, &url, bridge_in, bridge_out)
            .await
            .unwrap()
    });
    let mut client = LineClient::new(client_r, client_w);

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
