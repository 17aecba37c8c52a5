//! The fixture's Multi Round-Trip Request tools and prompt (2026-07-28, SEP-2322), as the suite's
//! `input-required-result-*` scenario descriptions specify them. The server keeps no state between rounds:
//! what it needs comes back in `requestState`, which it signs (a keyed hash; a test fixture, not a MAC to
//! rely on) so that a tampered state is refused.

use std::hash::{BuildHasher, Hasher};

use rmcp::model::{CallToolResponse, GetPromptResponse, InputResponses};
use serde_json::{Value, json};

/// The per-process signing key of `requestState`.
#[derive(Clone)]
pub struct StateKey(std::collections::hash_map::RandomState);

impl StateKey {
    pub fn new() -> StateKey {
        StateKey(std::collections::hash_map::RandomState::new())
    }

    fn mac(&self, payload: &str) -> u64 {
        let mut h = self.0.build_hasher();
        h.write(payload.as_bytes());
        h.finish()
    }

    fn seal(&self, payload: &str) -> String {
        format!("{payload}.{:016x}", self.mac(payload))
    }

    /// The payload of a state this process sealed; `None` if it was changed.
    fn open<'a>(&self, state: &'a str) -> Option<&'a str> {
        let (payload, mac) = state.rsplit_once('.')?;
        (format!("{:016x}", self.mac(payload)) == mac).then_some(payload)
    }
}

fn elicit(message: &str, field: &str, kind: &str) -> Value {
    json!({"method": "elicitation/create", "params": {"message": message, "requestedSchema": {
        "type": "object", "properties": {field: {"type": kind}}, "required": [field]}}})
}

fn sample(text: &str, max: u32) -> Value {
    json!({"method": "sampling/createMessage", "params": {
        "messages": [{"role": "user", "content": {"type": "text", "text": text}}], "maxTokens": max}})
}

fn roots() -> Value {
    json!({"method": "roots/list", "params": {}})
}

fn input_required(requests: Value, state: Option<String>) -> Value {
    let mut out = json!({"resultType": "input_required", "inputRequests": requests});
    if let Some(state) = state {
        out["requestState"] = json!(state);
    }
    out
}

fn text(text: &str) -> Value {
    json!({"resultType": "complete", "content": [{"type": "text", "text": text}]})
}

/// A field of an elicitation answer (`{action, content: {field}}`), or the text of a sampling answer.
fn answer(responses: &InputResponses, key: &str, field: &str) -> String {
    let Some(r) = responses.get(key) else {
        return String::new();
    };
    r["content"][field]
        .as_str()
        .or_else(|| r["content"]["text"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| r.to_string())
}

/// The JSON of a tool's answer, or `None` for a tool that is not an MRTR tool.
pub fn call(
    key: &StateKey,
    name: &str,
    responses: Option<&InputResponses>,
    state: Option<&str>,
) -> Option<Result<Value, rmcp::ErrorData>> {
    let opened = state.map(|s| key.open(s));
    if let Some(None) = opened {
        return Some(Err(rmcp::ErrorData::invalid_params(
            "requestState failed its integrity check",
            None,
        )));
    }
    let payload = opened.flatten();
    let value = match (name, responses) {
        ("test_input_required_result_elicitation", None) => input_required(
            json!({"user_name": elicit("What is your name?", "name", "string")}),
            None,
        ),
        ("test_input_required_result_elicitation", Some(r)) if r.contains_key("user_name") => {
            text(&format!("Hello, {}!", answer(r, "user_name", "name")))
        }
        ("test_input_required_result_sampling", None) => input_required(
            json!({"capital_question": sample("What is the capital of France?", 100)}),
            None,
        ),
        ("test_input_required_result_sampling", Some(r)) if r.contains_key("capital_question") => {
            text(&format!(
                "Sampling said: {}",
                answer(r, "capital_question", "text")
            ))
        }
        ("test_input_required_result_list_roots", None) => {
            input_required(json!({"client_roots": roots()}), None)
        }
        ("test_input_required_result_list_roots", Some(r)) if r.contains_key("client_roots") => {
            text(&format!("Roots: {}", r["client_roots"]["roots"]))
        }
        ("test_input_required_result_request_state", None) => input_required(
            json!({"confirm": elicit("Please confirm", "ok", "boolean")}),
            Some(key.seal("request-state")),
        ),
        ("test_input_required_result_request_state", Some(r)) if r.contains_key("confirm") => {
            match payload {
                Some("request-state") => text("state-ok: confirmed"),
                _ => return Some(Err(missing_state())),
            }
        }
        ("test_input_required_result_multiple_inputs", None) => input_required(
            json!({"user_name": elicit("What is your name?", "name", "string"),
                "greeting": sample("Generate a greeting", 50), "client_roots": roots()}),
            Some(key.seal("multiple")),
        ),
        ("test_input_required_result_multiple_inputs", Some(r))
            if ["user_name", "greeting", "client_roots"]
                .iter()
                .all(|k| r.contains_key(*k)) =>
        {
            match payload {
                Some("multiple") => text(&format!(
                    "{} {}",
                    answer(r, "greeting", "text"),
                    answer(r, "user_name", "name")
                )),
                _ => return Some(Err(missing_state())),
            }
        }
        ("test_input_required_result_multi_round", None) => input_required(
            json!({"step1": elicit("Step 1: What is your name?", "name", "string")}),
            Some(key.seal("round-1")),
        ),
        ("test_input_required_result_multi_round", Some(r)) => match payload {
            Some("round-1") if r.contains_key("step1") => input_required(
                json!({"step2": elicit("Step 2: What is your favorite color?", "color", "string")}),
                Some(key.seal(&format!("round-2:{}", answer(r, "step1", "name")))),
            ),
            Some(p) if p.starts_with("round-2:") && r.contains_key("step2") => text(&format!(
                "{} likes {}",
                &p["round-2:".len()..],
                answer(r, "step2", "color")
            )),
            _ => return Some(Err(missing_state())),
        },
        ("test_input_required_result_tampered_state", None) => input_required(
            json!({"confirm": elicit("Please confirm", "ok", "boolean")}),
            Some(key.seal("tamper-check")),
        ),
        ("test_input_required_result_tampered_state", Some(_)) => match payload {
            Some("tamper-check") => text("state-ok"),
            _ => return Some(Err(missing_state())),
        },
        (
            "test_input_required_result_elicitation"
            | "test_input_required_result_sampling"
            | "test_input_required_result_list_roots"
            | "test_input_required_result_request_state"
            | "test_input_required_result_multiple_inputs",
            Some(_),
        ) => {
            return Some(Err(rmcp::ErrorData::invalid_params(
                "inputResponses lacks a required key",
                None,
            )));
        }
        _ => return None,
    };
    Some(Ok(value))
}

fn missing_state() -> rmcp::ErrorData {
    rmcp::ErrorData::invalid_params("requestState missing or not this round's", None)
}

/// The MRTR tools, for `tools/list`.
pub const TOOLS: [&str; 7] = [
    "test_input_required_result_elicitation",
    "test_input_required_result_sampling",
    "test_input_required_result_list_roots",
    "test_input_required_result_request_state",
    "test_input_required_result_multiple_inputs",
    "test_input_required_result_multi_round",
    "test_input_required_result_tampered_state",
];

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, rmcp::ErrorData> {
    serde_json::from_value(value).map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))
}

/// A tool's answer as rmcp's response type (complete or input-required).
pub fn response(value: Value) -> Result<CallToolResponse, rmcp::ErrorData> {
    if value["resultType"] == "input_required" {
        Ok(CallToolResponse::InputRequired(from_json(value)?))
    } else {
        Ok(CallToolResponse::Complete(from_json(value)?))
    }
}

/// A prompt's answer as rmcp's response type.
pub fn prompt_response(value: Value) -> Result<GetPromptResponse, rmcp::ErrorData> {
    if value["resultType"] == "input_required" {
        Ok(GetPromptResponse::InputRequired(from_json(value)?))
    } else {
        Ok(GetPromptResponse::Complete(from_json(value)?))
    }
}

/// Input requests only for the capabilities the client declared, then a complete result.
pub fn by_capability(capabilities: &Value, responses: Option<&InputResponses>) -> Value {
    if responses.is_some_and(|r| !r.is_empty()) {
        return text("Thanks for the input");
    }
    let mut requests = serde_json::Map::new();
    if capabilities.get("sampling").is_some() {
        requests.insert("question".into(), sample("Say hello", 20));
    }
    if capabilities.get("elicitation").is_some() {
        requests.insert(
            "name".into(),
            elicit("What is your name?", "name", "string"),
        );
    }
    if capabilities.get("roots").is_some() {
        requests.insert("roots".into(), roots());
    }
    if requests.is_empty() {
        return text("No capability to ask with");
    }
    input_required(Value::Object(requests), None)
}

/// The MRTR prompt: input first, then a complete prompt.
pub fn prompt(responses: Option<&InputResponses>) -> Value {
    match responses {
        Some(r) if r.contains_key("user_context") => json!({"resultType": "complete", "messages": [
            {"role": "user", "content": {"type": "text",
                "text": format!("Prompt in context: {}", answer(r, "user_context", "context"))}}]}),
        _ => input_required(
            json!({"user_context": elicit("What context should the prompt use?", "context", "string")}),
            None,
        ),
    }
}
