//! A small stdio MCP server in Python for command-upstream tests: answers `initialize` with the version
//! the client asked for, echoes, never answers the tool `never`, exits on the tool `die`, and reports
//! through the tool `cancels` the request ids of the `notifications/cancelled` it received.

#![allow(dead_code)]

use std::ffi::OsString;

use tessera_mcp::http::Upstream;
use tessera_mcp::upstream::child::ChildSpec;

pub const SERVER: &str = r#"
import sys, json
cancels = []
def send(m):
    print(json.dumps(m), flush=True)
for line in sys.stdin:
    m = json.loads(line)
    method = m.get("method")
    if method == "notifications/cancelled":
        cancels.append(m["params"]["requestId"])
        continue
    if "id" not in m or method is None:
        continue
    params = m.get("params") or {}
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": m["id"], "result": {"protocolVersion": params.get("protocolVersion"),
              "capabilities": {"tools": {}}, "serverInfo": {"name": "py", "version": "0"}}})
        continue
    name = params.get("name")
    if name == "never":
        continue
    if name == "die":
        sys.exit(0)
    text = json.dumps(cancels) if name == "cancels" else "Echo: " + str(params.get("arguments", {}).get("message"))
    send({"jsonrpc": "2.0", "id": m["id"], "result": {"content": [{"type": "text", "text": text}]}})
"#;

/// The server as a command upstream.
pub fn upstream() -> Upstream {
    let command: Vec<OsString> = ["python3", "-c", SERVER]
        .iter()
        .map(OsString::from)
        .collect();
    Upstream::Command(ChildSpec::from_command(&command).expect("a command"))
}
