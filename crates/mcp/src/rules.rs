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
//! * `method_regex`, `tool_regex`: a regular expression (the `regex` crate's syntax, linear time, compiled
//!   at most [`MAX_REGEX`] bytes) the method or tool name must match (anywhere: anchor with `^…$`).
//! * `values`: JSON pointers (RFC 6901) into the message, each with the value it must equal, e.g.
//!   `{"/params/arguments/message": "secret"}`; a pointer to nothing never matches.
//! * Rules run in order; log and tag rules let the chain go on, the first block ends it.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::Value;

use crate::error::McpError;
use crate::jsonrpc::Message;
use crate::session::{Direction, McpSession};
use crate::tape::Tape;

/// Most rules in a file, and the longest tag a rule may add.
pub const MAX_RULES: usize = 1000;
const MAX_TAG: usize = 64;
/// Most compiled size of one rule's regular expression, in bytes.
pub const MAX_REGEX: usize = 1 << 20;
/// Most `values` conditions in one rule.
pub const MAX_VALUES: usize = 32;

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
    method_regex: Option<Regex>,
    tool_regex: Option<Regex>,
    values: Vec<(String, Value)>,
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
    method_regex: Option<String>,
    #[serde(default)]
    tool_regex: Option<String>,
    #[serde(default)]
    values: BTreeMap<String, Value>,
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

/// The rules in force, shared by every session of a proxy and replaceable while it runs (`tessera mcp
/// serve` and `stdio` read their `--rules` file again on SIGHUP). Each message is judged by the rules in
/// force when it passes. A set made with [`RuleSet::none`] has no rules and never gets any: the proxy then
/// holds no body for them.
#[derive(Debug, Clone, Default)]
pub struct RuleSet(Option<Arc<RwLock<Arc<Rules>>>>);

impl RuleSet {
    /// No rules (the default).
    pub fn none() -> RuleSet {
        RuleSet(None)
    }

    /// These rules, replaceable with [`RuleSet::replace`].
    pub fn new(rules: Rules) -> RuleSet {
        RuleSet(Some(Arc::new(RwLock::new(Arc::new(rules)))))
    }

    /// True unless made with [`RuleSet::none`].
    pub fn is_active(&self) -> bool {
        self.0.is_some()
    }

    /// The rules in force now.
    pub fn current(&self) -> Option<Arc<Rules>> {
        let lock = self.0.as_ref()?;
        Some(lock.read().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Puts `rules` in force for every message from now on, in every session sharing this set; false
    /// (and nothing changes) for a set made with [`RuleSet::none`].
    pub fn replace(&self, rules: Rules) -> bool {
        let Some(lock) = &self.0 else {
            return false;
        };
        *lock.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
        true
    }
}

/// The `name` in a request's params, read as the servers' JSON parsers (JavaScript's, Python's, Go's)
/// read it: of duplicated keys the last wins, so a rule sees the tool the server will run. (serde's
/// derived decoders refuse duplicates, which left a rule with no name to match: a way around it.)
struct ToolName(Option<String>);

impl<'de> Deserialize<'de> for ToolName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Last;
        impl<'de> serde::de::Visitor<'de> for Last {
            type Value = ToolName;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<ToolName, M::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "name" {
                        name = map.next_value::<Value>()?.as_str().map(str::to_owned);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(ToolName(name))
            }
        }
        d.deserialize_map(Last)
    }
}

impl Rules {
    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

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
            let compile =
                |pattern: Option<String>, what: &str| -> Result<Option<Regex>, McpError> {
                    pattern
                        .map(|p| {
                            RegexBuilder::new(&p)
                                .size_limit(MAX_REGEX)
                                .build()
                                .map_err(|e| bad(format!("rule {}: {what}: {e}", spec.name)))
                        })
                        .transpose()
                };
            let method_regex = compile(spec.method_regex, "method_regex")?;
            let tool_regex = compile(spec.tool_regex, "tool_regex")?;
            if spec.values.len() > MAX_VALUES {
                return Err(bad(format!(
                    "rule {}: more than {MAX_VALUES} values",
                    spec.name
                )));
            }
            if let Some(p) = spec
                .values
                .keys()
                .find(|p| !p.is_empty() && !p.starts_with('/'))
            {
                return Err(bad(format!(
                    "rule {}: {p:?} is not a JSON pointer (\"/a/b\")",
                    spec.name
                )));
            }
            rules.push(Rule {
                name: spec.name.into(),
                method: spec.method,
                direction,
                tool: spec.tool,
                method_regex,
                tool_regex,
                values: spec.values.into_iter().collect(),
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
        let mut body: Option<Value> = None;
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
            if rule
                .method_regex
                .as_ref()
                .is_some_and(|r| !r.is_match(method))
            {
                continue;
            }
            if rule.tool.is_some() || rule.tool_regex.is_some() {
                let name = tool
                    .get_or_insert_with(|| message.params::<ToolName>().and_then(|p| p.0))
                    .as_deref();
                if rule.tool.as_deref().is_some_and(|want| name != Some(want)) {
                    continue;
                }
                if let Some(re) = &rule.tool_regex
                    && !name.is_some_and(|n| re.is_match(n))
                {
                    continue;
                }
            }
            if !rule.values.is_empty() {
                // Parsed once per message, and only when a rule with values is reached.
                let body = body.get_or_insert_with(|| {
                    serde_json::from_slice(message.raw()).unwrap_or(Value::Null)
                });
                if !rule
                    .values
                    .iter()
                    .all(|(pointer, want)| body.pointer(pointer) == Some(want))
                {
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

/// Runs `rules` over `message` going `direction` in `mcp` (none for a stateless client), and does what
/// they say short of blocking: log lines, session tags, a `rule` record in the tape. The caller acts on
/// [`Verdict::block`]. `None` when no rule matched.
pub fn apply(
    rules: &Rules,
    mcp: Option<&McpSession>,
    direction: Direction,
    message: &Message,
    tape: Option<&Tape>,
) -> Option<Verdict> {
    let verdict = rules.evaluate(direction, message, |t| mcp.is_some_and(|m| m.has_tag(t)));
    if verdict.matched.is_empty() {
        return None;
    }
    if let Some(mcp) = mcp {
        for label in &verdict.tags {
            mcp.add_label(label);
        }
    }
    let session = mcp.map(McpSession::id);
    tracing::info!(
        target: "tessera_mcp::rules",
        session = ?session.map(|s| s.to_string()),
        dir = direction.label(),
        method = message.method(),
        rules = ?verdict.matched,
        blocked = verdict.block.is_some(),
        "rules matched"
    );
    if let Some(tape) = tape {
        tape.rules(session, direction, message, &verdict);
    }
    Some(verdict)
}

/// What to do with a message that a rule blocked: a request gets this error (to its sender); a
/// notification gets nothing (it is dropped).
pub fn blocked_reply(message: &Message, verdict: &Verdict) -> Option<Option<Message>> {
    let (_, code, text) = verdict.block.as_ref()?;
    Some(
        message
            .is_request()
            .then(|| Message::error_reply(message.id(), *code, text)),
    )
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
    fn regexes_and_values_narrow_a_rule() {
        let rules = Rules::from_json(
            r#"{"rules": [
            {"name": "r", "method_regex": "^tools/", "tool_regex": "^get-", "values": {"/params/arguments/a": 1}, "action": "block"}
        ]}"#,
        )
        .unwrap();
        let none = |_: &str| false;
        let check = |text: &str| {
            rules
                .evaluate(Direction::ClientToServer, &msg(text), none)
                .block
                .is_some()
        };
        assert!(check(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":1}}}"#
        ));
        assert!(!check(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get-sum","arguments":{"a":2}}}"#
        ));
        assert!(!check(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":1}}}"#
        ));
        assert!(!check(
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"get-x","arguments":{"a":1}}}"#
        ));
        assert!(!check(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#));
    }

    #[test]
    fn a_duplicated_tool_name_is_read_as_the_server_reads_it() {
        let rules = Rules::from_json(FILE).unwrap();
        let none = |_: &str| false;
        let blocked = |text: &str| {
            rules
                .evaluate(Direction::ClientToServer, &msg(text), none)
                .block
                .is_some()
        };
        // JSON.parse, Python's json and Go's encoding/json keep the last of duplicated keys.
        assert!(blocked(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"get-sum"}}"#
        ));
        assert!(blocked(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5,"arguments":{},"na\u006de":"get-sum"}}"#
        ));
        assert!(!blocked(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get-sum","name":"echo"}}"#
        ));
        // Two `params` are refused before any rule runs: which one would the server read?
        let twice = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"params":{"name":"get-sum"}}"#;
        let error = Message::parse(bytes::Bytes::from(twice)).unwrap_err();
        assert_eq!(error.code(), crate::jsonrpc::INVALID_REQUEST);
        assert!(error.to_string().contains("twice"), "{error}");
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        for bad in [
            "{",
            r#"{"rules": [{"name": "x", "action": "explode"}]}"#,
            r#"{"rules": [{"name": "x", "action": "tag"}]}"#,
            r#"{"rules": [{"name": "x", "action": "log", "direction": "up"}]}"#,
            r#"{"rules": [{"name": "x", "action": "log", "typo": 1}]}"#,
            r#"{"rules": [{"name": "x", "action": "log", "method_regex": "("}]}"#,
            r#"{"rules": [{"name": "x", "action": "log", "tool_regex": "a{100000}"}]}"#,
            r#"{"rules": [{"name": "x", "action": "log", "values": {"params": 1}}]}"#,
        ] {
            assert!(Rules::from_json(bad).is_err(), "{bad}");
        }
    }
}
