//! Interception rules: an ordered list, read from a JSON file (`--rules FILE`), each matching messages by
//! method, direction, tool name and session tags, with one action: block (a request gets a JSON-RPC error
//! back, a notification is dropped), log (a structured log line), or tag (the session gets a tag, which every
//! later frame carries in the tape and which later rules can match). Matches are recorded in the tape.
//!
//! ```json
//! {"rules": [
//!   {"name": "no-sum", "method": "tools/call", "tool": "get-sum", "action": "block",
//!    "code": -32003, "message": "get-sum is not allowed here"},
//!   {"name": "audit-tools", "method": "tools/*", "direction": "c2s", "action": "tag", "tag": "audited"},
//!   {"name": "noisy", "tags": ["high-volume"], "action": "log"}
//! ]}
//! ```
//!
//! * `method`: exact, or a prefix when it ends with `*`; absent = any method. Responses never match (they
//!   follow their request).
//! * `direction`: `c2s`, `s2c` or absent (both). `tool`: `params.name` of a `tools/call`/`prompts/get`.
//! * `tags`: every one must be set on the session — the computed ones (`long-running`, `high-volume`,
//!   `authenticated`, `error-prone`) or one a rule added.
//! * Rules run in order; log and tag rules let the chain go on, the first block ends it.

use std::sync::Arc;

use serde::Deserialize;

use crate::error::McpError;
use crate::jsonrpc::Message;
use crate::session::Direction;

/// Most rules in a file, and the longest tag a rule may add.
pub const MAX_RULES: usize = 1000;
const MAX_TAG: usize = 64;

/// JSON-RPC error code of a blocked request unless the rule gives one.
pub const BLOCKED: i32 = -32003;

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A request gets a JSON-RPC error with this code and message; a notification is dropped.
    Block {
        /// The error code.
        code: i32,
        /// The error message.
        message: String,
    },
    /// A log line (target `tessera_mcp::rules`, level info).
    Log,
    /// The session gets this tag.
    Tag(Arc<str>),
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name, in logs and tapes.
    pub name: Arc<str>,
    method: Option<String>,
    direction: Option<Direction>,
    tool: Option<String>,
    tags: Vec<String>,
    /// What it does.
    pub action: Action,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    direction: Option<String>,
    #[serde(default)]
    tool: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    action: String,
    #[serde(default)]
    code: Option<i32>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

/// The outcome of running the rules over one message.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The names of the rules that matched, in order.
    pub matched: Vec<Arc<str>>,
    /// Tags to add to the session.
    pub tags: Vec<Arc<str>>,
    /// The blocking rule's error, if one matched: (rule, code, message).
    pub block: Option<(Arc<str>, i32, String)>,
}

/// An ordered rule list.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct ToolName {
    #[serde(default)]
    name: Option<String>,
}

impl Rules {
    /// Parses a rule file (JSON, see the module docs).
    pub fn from_json(text: &str) -> Result<Rules, McpError> {
        let bad = |e: String| McpError::Rules(e);
        let file: RuleFile = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if file.rules.len() > MAX_RULES {
            return Err(bad(format!("more than {MAX_RULES} rules")));
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        for spec in file.rules {
            let direction = match spec.direction.as_deref() {
                None | Some("any") => None,
                Some("c2s") => Some(Direction::ClientToServer),
                Some("s2c") => Some(Direction::ServerToClient),
                Some(other) => {
                    return Err(bad(format!(
                        "rule {}: direction {other:?} (c2s, s2c or any)",
                        spec.name
                    )));
                }
            };
            let action = match spec.action.as_str() {
                "block" => Action::Block {
                    code: spec.code.unwrap_or(BLOCKED),
                    message: spec
                        .message
                        .unwrap_or_else(|| format!("blocked by rule {}", spec.name)),
                },
                "log" => Action::Log,
                "tag" => match spec.tag {
                    Some(tag) if !tag.is_empty() && tag.len() <= MAX_TAG => Action::Tag(tag.into()),
                    _ => {
                        return Err(bad(format!(
                            "rule {}: a tag action needs \"tag\" (1 to {MAX_TAG} bytes)",
                            spec.name
                        )));
                    }
                },
                other => {
                    return Err(bad(format!(
                        "rule {}: action {other:?} (block, log or tag)",
                        spec.name
                    )));
                }
            };
            rules.push(Rule {
                name: spec.name.into(),
                method: spec.method,
                direction,
                tool: spec.tool,
                tags: spec.tags,
                action,
            });
        }
        Ok(Rules { rules })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Runs the rules over `message` going `direction` in a session whose tags are `tags`.
    pub fn evaluate<'a>(
        &self,
        direction: Direction,
        message: &Message,
        tags: impl Fn(&str) -> bool + 'a,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        let Some(method) = message.method() else {
            return verdict;
        };
        let mut tool: Option<Option<String>> = None;
        for rule in &self.rules {
            if rule.direction.is_some_and(|d| d != direction) {
                continue;
            }
            if let Some(want) = &rule.method {
                let hit = match want.strip_suffix('*') {
                    Some(prefix) => method.starts_with(prefix),
                    None => method == want,
                };
                if !hit {
                    continue;
                }
            }
            if let Some(want) = &rule.tool {
                let name =
                    tool.get_or_insert_with(|| message.params::<ToolName>().and_then(|p| p.name));
                if name.as_deref() != Some(want.as_str()) {
                    continue;
                }
            }
            // Tags added by earlier rules of this chain count too.
            if !rule
                .tags
                .iter()
                .all(|t| tags(t) || verdict.tags.iter().any(|v| &**v == t))
            {
                continue;
            }
            verdict.matched.push(rule.name.clone());
            match &rule.action {
                Action::Block { code, message } => {
                    verdict.block = Some((rule.name.clone(), *code, message.clone()));
                    break;
                }
                Action::Log => {}
                Action::Tag(tag) => verdict.tags.push(tag.clone()),
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> Message {
        Message::parse(bytes::Bytes::from(text.to_owned())).unwrap()
    }

    const FILE: &str = r#"{"rules": [
        {"name": "audit", "method": "tools/*", "direction": "c2s", "action": "tag", "tag": "audited"},
        {"name": "log-all", "action": "log"},
        {"name": "no-sum", "method": "tools/call", "tool": "get-sum", "action": "block", "message": "no sums"},
        {"name": "no-ping-when-audited", "method": "ping", "tags": ["audited"], "action": "block", "code": -32050},
        {"name": "heavy", "tags": ["high-volume"], "action": "log"}
    ]}"#;

    #[test]
    fn rules_match_in_order_and_the_first_block_ends_the_chain() {
        let rules = Rules::from_json(FILE).unwrap();
        let none = |_: &str| false;
        let sum =
            msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get-sum"}}"#);
        let v = rules.evaluate(Direction::ClientToServer, &sum, none);
        assert_eq!(
            v.matched.iter().map(|m| &**m).collect::<Vec<_>>(),
            ["audit", "log-all", "no-sum"]
        );
        assert_eq!(v.tags.len(), 1);
        assert_eq!(v.block.as_ref().map(|b| b.1), Some(BLOCKED));
        // Another tool passes; the other direction is not tagged.
        let echo =
            msg(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}"#);
        assert!(
            rules
                .evaluate(Direction::ClientToServer, &echo, none)
                .block
                .is_none()
        );
        assert!(
            rules
                .evaluate(Direction::ServerToClient, &echo, none)
                .tags
                .is_empty()
        );
        // A rule on a session tag.
        let ping = msg(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#);
        assert!(
            rules
                .evaluate(Direction::ClientToServer, &ping, none)
                .block
                .is_none()
        );
        let audited = |t: &str| t == "audited";
        let v = rules.evaluate(Direction::ClientToServer, &ping, audited);
        assert_eq!(v.block.map(|b| b.1), Some(-32050));
        // Responses never match.
        let response = msg(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#);
        assert!(
            rules
                .evaluate(Direction::ServerToClient, &response, none)
                .matched
                .is_empty()
        );
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        for bad in [
            "{",
            r#"{"rules": [{"name": "x", "action": "explode"}]}"#,
            r#"{"rules": [{"name": "x", "action": "tag"}]}"#,
            r#"{"rules": [{"name": "x", "action": "log", "direction": "up"}]}"#,
            r#"{"rules": [{"name": "x", "action": "log", "typo": 1}]}"#,
        ] {
            assert!(Rules::from_json(bad).is_err(), "{bad}");
        }
    }
}
