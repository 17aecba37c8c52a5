use super::*;
use bytes::Bytes;

fn msg(s: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(s.as_bytes())).expect("valid test message")
}

fn sessions(per_session: usize, global: usize, deadline: Duration) -> Sessions {
    Sessions::new(McpConfig {
        pending: PendingLimits {
            per_session,
            global,
            deadline,
        },
        high_volume_frames: 5,
        ..McpConfig::default()
    })
}

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

#[tokio::test]
async fn initialize_result_is_recognized_by_its_request() {
    let s = sessions(10, 100, Duration::from_secs(5));
    let (guard, mcp) = s.create("test").unwrap();
    let init = msg(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#,
    );
    let pending = mcp.track_request(C2S, &init).unwrap();
    // A response shaped like an initialize result but answering another request records nothing.
    let other = msg(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    let _other_pending = mcp.track_request(C2S, &other).unwrap();
    let lookalike = msg(
        r#"{"jsonrpc":"2.0","id":2,"result":{"protocolVersion":"1999-01-01","capabilities":{}}}"#,
    );
    assert_eq!(
        mcp.correlate_response(S2C, &lookalike).unwrap().method,
        "tools/list"
    );
    assert_eq!(mcp.negotiated(), None);
    assert_eq!(guard.state(), SessionState::Initializing);
    let result = msg(
        r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"x","version":"1"}}}"#,
    );
    let c = mcp.correlate_response(S2C, &result).unwrap();
    assert_eq!(c.method, "initialize");
    let n = mcp.negotiated().unwrap();
    assert_eq!(n.protocol_version.as_deref(), Some("2025-06-18"));
    assert_eq!(n.capabilities.as_deref(), Some(r#"{"tools":{}}"#));
    assert_eq!(guard.state(), SessionState::Active);
    assert_eq!(
        McpSession::outcome(pending, init.id().unwrap())
            .await
            .unwrap()
            .raw(),
        result.raw()
    );
    // Answered once: a second response with the same id is not correlated.
    assert!(mcp.correlate_response(S2C, &result).is_none());
    guard.close();
}

#[tokio::test]
async fn discover_result_records_versions() {
    let s = sessions(10, 100, Duration::from_secs(5));
    let (_guard, mcp) = s.create("test").unwrap();
    let _p = mcp
        .track_request(
            C2S,
            &msg(r#"{"jsonrpc":"2.0","id":"d","method":"server/discover","params":{}}"#),
        )
        .unwrap();
    mcp.correlate_response(
        S2C,
        &msg(r#"{"jsonrpc":"2.0","id":"d","result":{"resultType":"complete","supportedVersions":["2026-07-28","2025-11-25"],"capabilities":{}}}"#),
    )
    .unwrap();
    let n = mcp.negotiated().unwrap();
    assert_eq!(n.via, "server/discover");
    assert_eq!(n.supported_versions, ["2026-07-28", "2025-11-25"]);
}

#[tokio::test]
async fn client_and_server_ids_do_not_collide() {
    let s = sessions(10, 100, Duration::from_secs(5));
    let (_guard, mcp) = s.create("test").unwrap();
    let _a = mcp
        .track_request(
            C2S,
            &msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#),
        )
        .unwrap();
    let _b = mcp
        .track_request(
            S2C,
            &msg(r#"{"jsonrpc":"2.0","id":1,"method":"roots/list"}"#),
        )
        .unwrap();
    // The client's answer to the server's request 1:
    let c = mcp
        .correlate_response(
            C2S,
            &msg(r#"{"jsonrpc":"2.0","id":1,"result":{"roots":[]}}"#),
        )
        .unwrap();
    assert_eq!(c.method, "roots/list");
    let c = mcp
        .correlate_response(S2C, &msg(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#))
        .unwrap();
    assert_eq!(c.method, "tools/call");
    // Numeric 1 and string "1" are different ids.
    let _n = mcp
        .track_request(C2S, &msg(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#))
        .unwrap();
    assert!(
        mcp.correlate_response(S2C, &msg(r#"{"jsonrpc":"2.0","id":"1","result":{}}"#))
            .is_none()
    );
}

#[tokio::test]
async fn limits_answer_the_sender() {
    let s = sessions(2, 3, Duration::from_secs(5));
    let (g1, a) = s.create("test").unwrap();
    let (_g2, b) = s.create("test").unwrap();
    let req = |id: u32| {
        msg(&format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call"}}"#
        ))
    };
    let _p1 = a.track_request(C2S, &req(1)).unwrap();
    let dup = a.track_request(C2S, &req(1)).unwrap_err();
    assert!(matches!(dup.error, SessionError::DuplicateRequest(_)));
    let _p2 = a.track_request(C2S, &req(2)).unwrap();
    let refusal = a.track_request(C2S, &req(3)).unwrap_err();
    assert!(matches!(
        refusal.error,
        SessionError::TooManyRequests {
            scope: LimitScope::Session,
            limit: 2
        }
    ));
    assert_eq!(refusal.reply.id().unwrap().as_json(), "3");
    assert!(refusal.reply.is_error());
    let _p3 = b.track_request(C2S, &req(1)).unwrap();
    let global = b.track_request(C2S, &req(2)).unwrap_err();
    assert!(matches!(
        global.error,
        SessionError::TooManyRequests {
            scope: LimitScope::Global,
            limit: 3
        }
    ));
    assert_eq!(s.registry().pending_len(), 3);
    // Ending a session frees its pending requests, and nothing leaks.
    g1.close();
    assert_eq!(s.registry().pending_len(), 1);
    assert!(b.track_request(C2S, &req(2)).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_request_past_its_deadline_gets_an_error_and_a_cancel() {
    let s = sessions(10, 100, Duration::from_secs(30));
    let (_guard, mcp) = s.create("test").unwrap();
    let req = msg(r#"{"jsonrpc":"2.0","id":"slow","method":"tools/call"}"#);
    let pending = mcp.track_request(C2S, &req).unwrap();
    let expired = McpSession::outcome(pending, req.id().unwrap())
        .await
        .unwrap_err()
        .unwrap();
    assert_eq!(expired.reply.id().unwrap().as_json(), r#""slow""#);
    assert!(expired.reply.is_error());
    assert_eq!(expired.cancel.method(), Some("notifications/cancelled"));
    assert!(
        std::str::from_utf8(expired.cancel.raw())
            .unwrap()
            .contains(r#""requestId":"slow""#)
    );
    assert_eq!(s.registry().pending_len(), 0);
    // The late response is not forwarded.
    assert!(
        mcp.correlate_response(S2C, &msg(r#"{"jsonrpc":"2.0","id":"slow","result":{}}"#))
            .is_none()
    );
}

#[tokio::test]
async fn cancellation_withdraws_the_request() {
    let s = sessions(10, 100, Duration::from_secs(5));
    let (_guard, mcp) = s.create("test").unwrap();
    let req = msg(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call"}"#);
    let pending = mcp.track_request(C2S, &req).unwrap();
    assert!(
        mcp.cancelled_by(
            C2S,
            &msg(
                r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}"#
            )
        )
        .is_some_and(|id| id.as_json() == "5")
    );
    assert!(
        McpSession::outcome(pending, req.id().unwrap())
            .await
            .unwrap_err()
            .is_none()
    );
    assert_eq!(s.registry().pending_len(), 0);
}

#[tokio::test]
async fn frame_metadata_and_tags_are_really_set() {
    let s = sessions(100, 100, Duration::from_secs(5));
    let (_guard, mcp) = s.create("test").unwrap();
    let first = mcp.observe(&msg(r#"{"jsonrpc":"2.0","method":"x"}"#));
    assert_eq!(first.frame_count, 1);
    assert_eq!(first.session, mcp.id());
    assert!(first.tags.is_empty());
    mcp.set_authenticated();
    for i in 0..10 {
        let r = msg(&format!(
            r#"{{"jsonrpc":"2.0","id":{i},"error":{{"code":-1,"message":"no"}}}}"#
        ));
        mcp.observe(&r);
    }
    let meta = mcp.observe(&msg(r#"{"jsonrpc":"2.0","method":"x"}"#));
    assert_eq!(meta.frame_count, 12);
    assert!(
        meta.tags
            .contains(Tags::HIGH_VOLUME | Tags::AUTHENTICATED | Tags::ERROR_PRONE)
    );
    assert!(!meta.tags.contains(Tags::LONG_RUNNING));
    assert_eq!(
        meta.tags.names().collect::<Vec<_>>(),
        ["high-volume", "authenticated", "error-prone"]
    );
}

#[tokio::test(start_paused = true)]
async fn long_running_tag_follows_the_clock() {
    let s = Sessions::new(McpConfig {
        long_running_after: Duration::from_secs(60),
        ..McpConfig::default()
    });
    let (_guard, mcp) = s.create("test").unwrap();
    assert!(!mcp.tags().contains(Tags::LONG_RUNNING));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        mcp.observe(&msg(r#"{"jsonrpc":"2.0","method":"x"}"#))
            .tags
            .contains(Tags::LONG_RUNNING)
    );
}
