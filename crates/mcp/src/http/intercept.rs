//! Interception rules ([`crate::rules`]) on the HTTP front: over every client message (any upstream), and
//! over the messages a command upstream's child sends. A blocked request is answered with the rule's
//! JSON-RPC error (to the client, or to the child for a server request); a blocked notification is dropped.
//! Log rules write a structured line; tag rules tag the session; every match is a `rule` record in the tape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{Accept, State, message_response};
use crate::jsonrpc::Message;
use crate::rules::Verdict;
use crate::session::{Direction, McpSession};

/// Runs the rules over `message` ([`crate::rules::apply`]). `None` when no rule matched.
fn run(
    state: &State,
    mcp: Option<&McpSession>,
    direction: Direction,
    message: &Message,
) -> Option<Verdict> {
    let rules = state.config.rules.current()?;
    crate::rules::apply(&rules, mcp, direction, message, state.tape.as_ref())
}

/// A client message: `Some` is the answer when a rule blocks it.
pub(crate) fn client(
    state: &State,
    mcp: Option<&McpSession>,
    message: &Message,
    accept: Accept,
) -> Option<Response> {
    let (_, code, text) = run(state, mcp, Direction::ClientToServer, message)?.block?;
    if message.is_request() {
        let reply = Message::error_reply(message.id(), code, &text);
        Some(message_response(&reply, accept, None))
    } else {
        Some(StatusCode::ACCEPTED.into_response())
    }
}

/// A message from a command upstream's child: `Some` is what to send back to the child (a blocked
/// request's error) — the message itself must then not go on; `Some(None)` for a dropped notification.
pub(crate) fn server(
    state: &State,
    mcp: &McpSession,
    message: &Message,
) -> Option<Option<Message>> {
    let (_, code, text) = run(state, Some(mcp), Direction::ServerToClient, message)?.block?;
    Some(
        message
            .is_request()
            .then(|| Message::error_reply(message.id(), code, &text)),
    )
}
