//! Untrusted JSON-RPC bytes through everything the proxy does with one message before forwarding it:
//! the envelope parse, the newline-safe form, batch splitting, interception rules and the reply to a
//! blocked request; plus the `MCP-Protocol-Version` header and a tape file read by `mcp tape show`.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tessera_mcp::http::version;
use tessera_mcp::rules::{Rules, blocked_reply};
use tessera_mcp::{Direction, Kind, Message};

const RULES: &str = r#"{"rules": [
    {"name": "tag-tools", "method": "tools/*", "action": "tag", "tag": "tools"},
    {"name": "get-tools", "method": "tools/call", "tool_regex": "^get-", "action": "block", "message": "no get- tools"},
    {"name": "secret", "method_regex": "^tools/(call|run)$", "values": {"/params/arguments/message": "secret"}, "action": "block", "code": -32051},
    {"name": "tagged-ping", "method": "ping", "tags": ["tools"], "action": "block"},
    {"name": "progress", "method_regex": "^notifications/prog", "direction": "s2c", "action": "log"}
]}"#;

fn rules() -> &'static Rules {
    static RULES_ONCE: OnceLock<Rules> = OnceLock::new();
    RULES_ONCE.get_or_init(|| Rules::from_json(RULES).expect("the fixed rules parse"))
}

fn check(message: &Message) {
    // Newline-delimited framing must keep the message what it was.
    let safe = message.line_safe();
    assert!(!safe.iter().any(|&b| b == b'\n' || b == b'\r'));
    let again = Message::parse(safe).expect("the line-safe form of a message is a message");
    assert_eq!(again.kind(), message.kind());

    if let Some(elements) = message.batch_elements(16) {
        for element in elements.into_iter().flatten() {
            assert!(!matches!(element.kind(), Kind::Batch));
        }
    }
    for direction in [Direction::ClientToServer, Direction::ServerToClient] {
        let verdict = rules().evaluate(direction, message, |t| t == "tools");
        if let Some(reply) = blocked_reply(message, &verdict).flatten() {
            // The error answers the blocked request's own id.
            assert!(matches!(
                reply.kind(),
                Kind::Response {
                    error_code: Some(_),
                    ..
                }
            ));
            assert_eq!(reply.id(), message.id());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = Bytes::copy_from_slice(data);
    if let Ok(message) = Message::parse(raw.clone()) {
        assert_eq!(message.raw(), &raw, "a message is kept byte for byte");
        check(&message);
    }
    let _ = version::parse(Some(data));
    if let Ok(summary) = tessera_mcp::tape::summarize(data) {
        let _ = format!("{summary:?}");
    }
});
