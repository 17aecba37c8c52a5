//! An rmcp 3.x client (the official Rust SDK) through the stdio proxy ([`tessera_mcp::stdio::run`]) to the
//! fixture as a child, in both eras: the legacy `initialize` lifecycle (a tool, a resource, and a sampling
//! request from the server answered by the client) and the 2026-07-28 `server/discover` lifecycle (a tool,
//! and a Multi Round-Trip Request over three rounds with the client's elicitation answers, `requestState`
//! passing intact through the proxy).

#![allow(deprecated)] // sampling: a legacy feature, deprecated in rmcp (SEP-2577)

use std::ffi::OsString;
use std::time::Duration;

use rmcp::ClientHandler;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, CreateMessageRequestParams,
    CreateMessageResult, ElicitRequestParams, ElicitResult, ProtocolVersion,
    ReadResourceRequestParams,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RequestContext, RoleClient};
use serde_json::{Value, json};
use tessera_mcp::upstream::child::ChildSpec;
use tessera_mcp::{McpConfig, Sessions};

/// A client that can sample and elicit: it answers a name, a colour, and "Paris".
#[derive(Clone)]
struct Answers;

impl ClientHandler for Answers {
    fn get_info(&self) -> ClientConfig {
        let capabilities: ClientCapabilities =
            serde_json::from_value(json!({"sampling": {}, "elicitation": {}})).unwrap_or_default();
        ClientConfig::new(
            capabilities,
            rmcp::model::Implementation::new("rmcp-client-test", "0"),
        )
    }

    async fn create_message(
        &self,
        _params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, rmcp::ErrorData> {
        serde_json::from_value(json!({"model": "test", "role": "assistant",
            "content": {"type": "text", "text": "Paris"}}))
        .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, rmcp::ErrorData> {
        let asked = serde_json::to_value(&request).unwrap_or_default();
        let wants_colour = asked.to_string().contains("color");
        let content = if wants_colour {
            json!({"color": "blue"})
        } else {
            json!({"name": "Ada"})
        };
        serde_json::from_value(json!({"action": "accept", "content": content}))
            .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))
    }
}

fn text_of(result: &impl serde::Serialize) -> String {
    let value = serde_json::to_value(result).unwrap_or(Value::Null);
    value["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn through_the_proxy(lifecycle: ClientLifecycleMode, modern: bool) {
    let me = std::env::current_exe().expect("this test binary");
    let mut spec =
        ChildSpec::from_command(&[me.into_os_string(), OsString::from("--fixture-stdio")])
            .expect("child spec");
    spec.grace = Duration::from_millis(500);
    let sessions = Sessions::new(McpConfig::default());
    let (client_io, proxy_io) = tokio::io::duplex(1 << 16);
    let (proxy_in, proxy_out) = tokio::io::split(proxy_io);
    let proxy_sessions = sessions.clone();
    let proxy = tokio::spawn(async move {
        tessera_mcp::stdio::run(&proxy_sessions, &spec, proxy_in, proxy_out, None).await
    });
    let (client_r, client_w) = tokio::io::split(client_io);
    let client = Answers
        .serve_with_lifecycle((client_r, client_w), lifecycle)
        .await
        .expect("the rmcp client starts through the proxy");

    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(
        tools.iter().any(|t| t.name == "test_simple_text"),
        "{tools:?}"
    );
    let simple = client
        .call_tool(CallToolRequestParams::new("test_simple_text"))
        .await
        .expect("tools/call");
    assert_eq!(
        text_of(&simple),
        "This is a simple text response for testing."
    );
    let resource = client
        .read_resource(ReadResourceRequestParams::new("test://static-text"))
        .await
        .expect("resources/read");
    let resource = serde_json::to_value(&resource).unwrap_or_default();
    assert_eq!(
        resource["contents"][0]["text"],
        "This is the content of the static text resource."
    );
    if modern {
        // Three rounds: name, then colour (with the server's state), then the answer.
        let done = client
            .call_tool(CallToolRequestParams::new(
                "test_input_required_result_multi_round",
            ))
            .await
            .expect("a multi round-trip tools/call");
        assert_eq!(text_of(&done), "Ada likes blue");
    } else {
        // A server-to-client request (sampling) crosses the proxy both ways.
        let mut call = CallToolRequestParams::new("test_sampling");
        call.arguments = serde_json::from_value(json!({"prompt": "Capital of France?"})).ok();
        let sampled = client
            .call_tool(call)
            .await
            .expect("tools/call with sampling");
        assert_eq!(text_of(&sampled), "LLM response: Paris");
    }
    client.cancel().await.expect("the client stops");
    let exit = tokio::time::timeout(Duration::from_secs(30), proxy)
        .await
        .expect("the proxy ends with its client")
        .expect("the proxy task")
        .expect("the proxy runs");
    let _ = exit;
    sessions.registry().wait_empty().await;
}

/// Both eras, one after the other.
pub async fn run() {
    through_the_proxy(ClientLifecycleMode::Initialize, false).await;
    through_the_proxy(
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
        true,
    )
    .await;
}
