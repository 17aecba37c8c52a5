//! Our own conformance fixture: an rmcp 3.x server (the official Rust SDK, dual-era) offering the
//! primitives the conformance suite's server scenarios call (`test_simple_text`, `test://static-text`,
//! `test_simple_prompt`, …), as the scenario descriptions specify them. The suite's npm package ships no
//! fixture server, so this one is written here; scenarios it does not implement fail against it directly
//! and are therefore not compared.
//!
//! Served two ways: Streamable HTTP in the test process (the URL upstream), and stdio when the test binary
//! is started with `--fixture-stdio` (the command upstream).

#![allow(deprecated)] // logging, sampling, subscribe: legacy scenarios, deprecated in rmcp (SEP-2577)

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ServerCapabilities,
    ServerConfig, SetLevelRequestParams, SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, RoleServer};
use serde::de::DeserializeOwned;

use crate::mrtr::{self, StateKey};
use serde_json::{Value, json};

/// A 1x1 red PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A 44-byte WAV header with no samples.
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=";

/// The fixture server (stateless: every answer is computed from the request and the signed
/// `requestState` it gets back).
#[derive(Clone)]
pub struct Fixture {
    key: StateKey,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            key: StateKey::new(),
        }
    }
}

fn from_json<T: DeserializeOwned>(value: Value) -> Result<T, rmcp::ErrorData> {
    serde_json::from_value(value).map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))
}

/// A result type from JSON, marked `resultType: complete` (2026-07-28; rmcp drops it for older peers).
fn result<T: DeserializeOwned>(mut value: Value) -> Result<T, rmcp::ErrorData> {
    if let Value::Object(object) = &mut value {
        object.insert("resultType".into(), json!("complete"));
    }
    from_json(value)
}

fn text_result(text: &str) -> Result<CallToolResponse, rmcp::ErrorData> {
    let result: CallToolResult = result(json!({"content": [{"type": "text", "text": text}]}))?;
    Ok(result.into())
}

fn tool(name: &str, description: &str, schema: Value) -> Tool {
    let Value::Object(schema) = schema else {
        return Tool::new(
            name.to_owned(),
            description.to_owned(),
            serde_json::Map::new(),
        );
    };
    Tool::new(name.to_owned(), description.to_owned(), schema)
}

fn no_args() -> Value {
    json!({"type": "object", "properties": {}})
}

fn string_args(names: &[&str]) -> Value {
    let properties: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| ((*n).to_owned(), json!({"type": "string"})))
        .collect();
    json!({"type": "object", "properties": properties, "required": names})
}

fn arg<'a>(request: &'a CallToolRequestParams, name: &str) -> &'a str {
    request
        .arguments
        .as_ref()
        .and_then(|a| a.get(name))
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl Fixture {
    async fn with_progress(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, rmcp::ErrorData> {
        let token = context.meta.get_progress_token();
        for progress in [0.0, 50.0, 100.0] {
            if let Some(token) = &token {
                let param: ProgressNotificationParam = from_json(
                    json!({"progressToken": token, "progress": progress, "total": 100.0}),
                )?;
                let _ = context.peer.notify_progress(param).await;
            }
            if progress < 100.0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        text_result("Progress tool completed")
    }

    async fn with_logging(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, rmcp::ErrorData> {
        for (i, message) in [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed",
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let param: LoggingMessageNotificationParam =
                from_json(json!({"level": "info", "data": message}))?;
            let _ = context.peer.notify_logging_message(param).await;
        }
        text_result("Logging tool completed")
    }

    async fn sampling(
        &self,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, rmcp::ErrorData> {
        let params = from_json(json!({
            "messages": [{"role": "user", "content": {"type": "text", "text": arg(request, "prompt")}}],
            "maxTokens": 100
        }))?;
        let answer = context
            .peer
            .create_message(params)
            .await
            .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))?;
        let answer = serde_json::to_value(&answer).unwrap_or(Value::Null);
        let text = answer["content"]["text"].as_str().unwrap_or_default();
        text_result(&format!("LLM response: {text}"))
    }
}

impl Fixture {
    /// Asks the client (`elicitation/create`, legacy eras) and reports its answer as `prefix` + action and
    /// content.
    async fn elicit(
        &self,
        params: Value,
        prefix: &str,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, rmcp::ErrorData> {
        let params = from_json(params)?;
        let answer = context
            .peer
            .create_elicitation(params)
            .await
            .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))?;
        let answer = serde_json::to_value(&answer).unwrap_or(Value::Null);
        text_result(&format!(
            "{prefix}action={}, content={}",
            answer["action"].as_str().unwrap_or("?"),
            answer.get("content").cloned().unwrap_or(Value::Null)
        ))
    }
}

fn sep1034_schema() -> Value {
    json!({"type": "object", "properties": {
        "name": {"type": "string", "default": "John Doe"},
        "age": {"type": "integer", "default": 30},
        "score": {"type": "number", "default": 95.5},
        "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
        "verified": {"type": "boolean", "default": true}}})
}

fn sep1330_schema() -> Value {
    json!({"type": "object", "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "oneOf": [
            {"const": "value1", "title": "First Option"}, {"const": "value2", "title": "Second Option"},
            {"const": "value3", "title": "Third Option"}]},
        "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {"type": "array", "items": {"anyOf": [
            {"const": "value1", "title": "First Choice"}, {"const": "value2", "title": "Second Choice"},
            {"const": "value3", "title": "Third Choice"}]}}}})
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_prompts()
                .enable_logging()
                .enable_completions()
                .build(),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, rmcp::ErrorData> {
        Ok(ListToolsResult::with_all_items(
            vec![
                tool("test_simple_text", "Returns simple text", no_args()),
                tool("test_image_content", "Returns an image", no_args()),
                tool("test_audio_content", "Returns audio", no_args()),
                tool("test_embedded_resource", "Returns a resource", no_args()),
                tool(
                    "test_multiple_content_types",
                    "Returns mixed content",
                    no_args(),
                ),
                tool("test_error_handling", "Always fails", no_args()),
                tool("test_tool_with_progress", "Reports progress", no_args()),
                tool("test_tool_with_logging", "Logs while it runs", no_args()),
                tool(
                    "test_sampling",
                    "Asks the client's LLM",
                    string_args(&["prompt"]),
                ),
                tool(
                    "test_missing_capability",
                    "Needs the sampling capability",
                    no_args(),
                ),
                tool(
                    "test_elicitation",
                    "Asks the user",
                    string_args(&["message"]),
                ),
                tool(
                    "test_elicitation_sep1034_defaults",
                    "Asks with defaults",
                    no_args(),
                ),
                tool(
                    "test_elicitation_sep1330_enums",
                    "Asks with enums",
                    no_args(),
                ),
                tool("test_logging_tool", "Logs when asked to", no_args()),
                tool(
                    "test_streaming_elicitation",
                    "Asks for input (MRTR)",
                    no_args(),
                ),
            ]
            .into_iter()
            .chain(
                mrtr::TOOLS
                    .iter()
                    .map(|name| tool(name, "Multi round-trip", no_args())),
            )
            .collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, rmcp::ErrorData> {
        if let Some(answer) = mrtr::call(
            &self.key,
            request.name.as_ref(),
            request.input_responses.as_ref(),
            request.request_state.as_deref(),
        ) {
            return mrtr::response(answer?);
        }
        let content = match request.name.as_ref() {
            "test_missing_capability" => {
                let meta = serde_json::to_value(&context.meta).unwrap_or_default();
                let caps = &meta["io.modelcontextprotocol/clientCapabilities"];
                if caps.get("sampling").is_none() {
                    return Err(rmcp::ErrorData::new(
                        rmcp::model::ErrorCode(-32021),
                        "Missing required client capability",
                        Some(json!({"requiredCapabilities": {"sampling": {}}})),
                    ));
                }
                json!([{"type": "text", "text": "sampling declared"}])
            }
            "test_logging_tool" => {
                // 2026-07-28: no log unless the request set a level.
                let meta = serde_json::to_value(&context.meta).unwrap_or_default();
                if meta.get("io.modelcontextprotocol/logLevel").is_some() {
                    return self.with_logging(&context).await;
                }
                return text_result("Nothing logged: no logLevel");
            }
            "test_input_required_result_capabilities" => {
                let meta = serde_json::to_value(&context.meta).unwrap_or_default();
                let caps = meta["io.modelcontextprotocol/clientCapabilities"].clone();
                return mrtr::response(mrtr::by_capability(
                    &caps,
                    request.input_responses.as_ref(),
                ));
            }
            "test_streaming_elicitation" => {
                return mrtr::response(
                    mrtr::call(
                        &self.key,
                        "test_input_required_result_elicitation",
                        request.input_responses.as_ref(),
                        None,
                    )
                    .unwrap_or_else(|| Ok(json!({})))?,
                );
            }
            "test_simple_text" => {
                return text_result("This is a simple text response for testing.");
            }
            "test_image_content" => {
                json!([{"type": "image", "data": PNG, "mimeType": "image/png"}])
            }
            "test_audio_content" => {
                json!([{"type": "audio", "data": WAV, "mimeType": "audio/wav"}])
            }
            "test_embedded_resource" => json!([{"type": "resource", "resource": {
                "uri": "test://embedded-resource", "mimeType": "text/plain",
                "text": "This is an embedded resource content."}}]),
            "test_multiple_content_types" => json!([
                {"type": "text", "text": "Multiple content types test:"},
                {"type": "image", "data": PNG, "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "test://mixed-content-resource",
                    "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}"}}
            ]),
            "test_error_handling" => {
                let result: CallToolResult = result(json!({"isError": true, "content": [
                    {"type": "text", "text": "This tool intentionally returns an error for testing"}]}))?;
                return Ok(result.into());
            }
            "test_tool_with_progress" => return self.with_progress(&context).await,
            "test_tool_with_logging" => return self.with_logging(&context).await,
            "test_sampling" => return self.sampling(&request, &context).await,
            "test_elicitation" => {
                let params = json!({"message": arg(&request, "message"), "requestedSchema": {
                    "type": "object", "properties": {
                        "username": {"type": "string", "description": "User's response"},
                        "email": {"type": "string", "description": "User's email address"}},
                    "required": ["username", "email"]}});
                return self.elicit(params, "User response: ", &context).await;
            }
            "test_elicitation_sep1034_defaults" => {
                let params =
                    json!({"message": "Defaults test", "requestedSchema": sep1034_schema()});
                return self
                    .elicit(params, "Elicitation completed: ", &context)
                    .await;
            }
            "test_elicitation_sep1330_enums" => {
                let params = json!({"message": "Enums test", "requestedSchema": sep1330_schema()});
                return self
                    .elicit(params, "Elicitation completed: ", &context)
                    .await;
            }
            other => {
                return Err(rmcp::ErrorData::invalid_params(
                    format!("unknown tool {other}"),
                    None,
                ));
            }
        };
        let result: CallToolResult = result(json!({ "content": content }))?;
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, rmcp::ErrorData> {
        result(json!({"resources": [
            {"uri": "test://static-text", "name": "static-text", "description": "A text resource", "mimeType": "text/plain"},
            {"uri": "test://static-binary", "name": "static-binary", "description": "A binary resource", "mimeType": "image/png"},
            {"uri": "test://watched-resource", "name": "watched-resource", "description": "A resource to subscribe to", "mimeType": "text/plain"}
        ]}))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, rmcp::ErrorData> {
        result(
            json!({"resourceTemplates": [{"uriTemplate": "test://template/{id}/data",
            "name": "template", "description": "Data by id", "mimeType": "application/json"}]}),
        )
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, rmcp::ErrorData> {
        let uri = request.uri.as_str();
        let contents = match uri {
            "test://static-text" => json!({"uri": uri, "mimeType": "text/plain",
                "text": "This is the content of the static text resource."}),
            "test://static-binary" => json!({"uri": uri, "mimeType": "image/png", "blob": PNG}),
            "test://watched-resource" => {
                json!({"uri": uri, "mimeType": "text/plain", "text": "watched"})
            }
            _ => match uri
                .strip_prefix("test://template/")
                .and_then(|rest| rest.strip_suffix("/data"))
            {
                Some(id) if !id.is_empty() && !id.contains('/') => {
                    let text = json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
                    json!({"uri": uri, "mimeType": "application/json", "text": text.to_string()})
                }
                _ => {
                    return Err(rmcp::ErrorData::invalid_params(
                        "Resource not found",
                        Some(json!({ "uri": uri })),
                    ));
                }
            },
        };
        let result: ReadResourceResult = result(json!({ "contents": [contents] }))?;
        Ok(result.into())
    }

    async fn subscribe(
        &self,
        _request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        Ok(())
    }

    async fn unsubscribe(
        &self,
        _request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, rmcp::ErrorData> {
        result(json!({"prompts": [
            {"name": "test_simple_prompt", "description": "A simple prompt"},
            {"name": "test_prompt_with_arguments", "description": "A prompt with arguments", "arguments": [
                {"name": "arg1", "description": "First test argument", "required": true},
                {"name": "arg2", "description": "Second test argument", "required": true}]},
            {"name": "test_prompt_with_embedded_resource", "description": "A prompt with a resource", "arguments": [
                {"name": "resourceUri", "description": "URI of the resource to embed", "required": true}]},
            {"name": "test_prompt_with_image", "description": "A prompt with an image"},
            {"name": "test_input_required_result_prompt", "description": "A prompt that asks for input first"}
        ]}))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, rmcp::ErrorData> {
        let args = request.arguments.clone().unwrap_or_default();
        let get = |name: &str| {
            args.get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let messages = match request.name.as_ref() {
            "test_simple_prompt" => json!([{"role": "user", "content": {"type": "text",
                "text": "This is a simple prompt for testing."}}]),
            "test_prompt_with_arguments" => json!([{"role": "user", "content": {"type": "text",
                "text": format!("Prompt with arguments: arg1='{}', arg2='{}'", get("arg1"), get("arg2"))}}]),
            "test_prompt_with_embedded_resource" => json!([
                {"role": "user", "content": {"type": "resource", "resource": {"uri": get("resourceUri"),
                    "mimeType": "text/plain", "text": "Embedded resource content for testing."}}},
                {"role": "user", "content": {"type": "text", "text": "Please process the embedded resource above."}}
            ]),
            "test_input_required_result_prompt" => {
                return mrtr::prompt_response(mrtr::prompt(request.input_responses.as_ref()));
            }
            "test_prompt_with_image" => json!([
                {"role": "user", "content": {"type": "image", "data": PNG, "mimeType": "image/png"}},
                {"role": "user", "content": {"type": "text", "text": "Please analyze the image above."}}
            ]),
            other => {
                return Err(rmcp::ErrorData::invalid_params(
                    format!("unknown prompt {other}"),
                    None,
                ));
            }
        };
        let result: GetPromptResult = result(json!({ "messages": messages }))?;
        Ok(result.into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, rmcp::ErrorData> {
        let partial = request.argument.value.clone();
        let values: Vec<&str> = ["paris", "park", "party"]
            .into_iter()
            .filter(|v| v.starts_with(partial.as_str()))
            .collect();
        result(json!({"completion": {"values": values, "total": values.len(), "hasMore": false}}))
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn set_level(
        &self,
        _request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        Ok(())
    }
}

/// Serves the fixture over Streamable HTTP on a loopback port until `stop`; returns its `/mcp` URL.
pub async fn serve_http(stop: &tokio_util::sync::CancellationToken) -> String {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let service = StreamableHttpService::new(
        {
            let fixture = Fixture::new();
            move || Ok(fixture.clone())
        },
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_sse_keep_alive(None)
            .with_cancellation_token(stop.child_token()),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fixture");
    let addr = listener.local_addr().expect("fixture address");
    let stop = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    format!("http://{addr}/mcp")
}

/// Serves the fixture on this process's stdin/stdout until the client closes stdin.
pub async fn serve_stdio() {
    use rmcp::ServiceExt;
    match Fixture::new().serve(rmcp::transport::stdio()).await {
        Ok(running) => {
            let _ = running.waiting().await;
        }
        Err(e) => eprintln!("fixture: {e}"),
    }
}
