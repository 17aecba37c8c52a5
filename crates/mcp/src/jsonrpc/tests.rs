//! Envelope tests, including proptests on arbitrary bytes.

use super::*;
use proptest::prelude::*;

fn parse(s: &str) -> Result<Message, ParseError> {
    Message::parse(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn classifies_the_three_kinds() {
    let m = parse(r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{}}"#).unwrap();
    assert_eq!(m.method(), Some("tools/list"));
    assert_eq!(m.id().unwrap().as_json(), "7");
    assert!(m.is_request());
    let n = parse(r#"{"method":"notifications/initialized","jsonrpc":"2.0"}"#).unwrap();
    assert_eq!(
        n.kind(),
        &Kind::Notification {
            method: "notifications/initialized".into()
        }
    );
    let r = parse(r#"{"jsonrpc":"2.0","id":"a\"b","result":{}}"#).unwrap();
    assert_eq!(r.id().unwrap().as_json(), r#""a\"b""#);
    let e = parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#).unwrap();
    assert_eq!(
        e.kind(),
        &Kind::Response {
            id: None,
            error_code: Some(-32700)
        }
    );
    let null_result = parse(r#"{"jsonrpc":"2.0","id":1,"result":null}"#).unwrap();
    assert!(matches!(
        null_result.kind(),
        Kind::Response {
            error_code: None,
            ..
        }
    ));
    assert_eq!(
        parse(r#"[{"jsonrpc":"2.0","method":"x"}]"#).unwrap().kind(),
        &Kind::Batch
    );
}

#[test]
fn keeps_bytes_exactly() {
    let text = r#"{"zeta":1,"jsonrpc":"2.0","id":1e0,"method":"m","x-unknown":{"b":2,"a":1}}"#;
    let m = parse(text).unwrap();
    assert_eq!(m.raw().as_ref(), text.as_bytes());
    assert_eq!(m.id().unwrap().as_json(), "1e0");
}

#[test]
fn rejects_with_the_right_code() {
    assert_eq!(parse("{not json").unwrap_err().code(), PARSE_ERROR);
    assert_eq!(parse("").unwrap_err().code(), PARSE_ERROR);
    assert_eq!(parse("42").unwrap_err().code(), INVALID_REQUEST);
    assert_eq!(parse("[]").unwrap_err().code(), INVALID_REQUEST);
    let e = parse(r#"{"jsonrpc":"1.0","id":3,"method":"m"}"#).unwrap_err();
    assert_eq!(e.code(), INVALID_REQUEST);
    let reply = e.reply();
    assert_eq!(reply.id().unwrap().as_json(), "3");
    assert_eq!(
        parse(r#"{"jsonrpc":"2.0","id":{},"method":"m"}"#)
            .unwrap_err()
            .code(),
        INVALID_REQUEST
    );
    assert_eq!(
        parse(r#"{"jsonrpc":"2.0","id":1}"#).unwrap_err().code(),
        INVALID_REQUEST
    );
    assert_eq!(
        parse(r#"{"jsonrpc":"2.0","method":5}"#).unwrap_err().code(),
        INVALID_REQUEST
    );
}

#[test]
fn built_messages_parse_back() {
    let id = Id::from_raw(r#""x""#).unwrap();
    let e = Message::error_reply(Some(&id), PROXY_ERROR, "too \"many\"");
    let back = parse(std::str::from_utf8(e.raw()).unwrap()).unwrap();
    assert_eq!(back.kind(), e.kind());
    let c = Message::cancelled(&id, "timeout");
    let back = parse(std::str::from_utf8(c.raw()).unwrap()).unwrap();
    assert_eq!(back.method(), Some("notifications/cancelled"));
    #[derive(Deserialize)]
    struct P {
        #[serde(rename = "requestId")]
        request_id: String,
    }
    assert_eq!(back.params::<P>().unwrap().request_id, "x");
}

#[test]
fn with_id_changes_only_the_id() {
    let m = parse(
        r#"{"z":1, "id":"a\"b","jsonrpc":"2.0","method":"m","params":{"y":[1,2],"x":"\u00e9"}}"#,
    )
    .unwrap();
    let n = m.with_id(&Id::number(77)).unwrap();
    assert_eq!(
        std::str::from_utf8(n.raw()).unwrap(),
        r#"{"z":1,"id":77,"jsonrpc":"2.0","method":"m","params":{"y":[1,2],"x":"\u00e9"}}"#
    );
    let back = n.with_id(m.id().unwrap()).unwrap();
    assert_eq!(back.id(), m.id());
    assert!(
        parse(r#"{"jsonrpc":"2.0","method":"n"}"#)
            .unwrap()
            .with_id(&Id::number(1))
            .is_none()
    );
}

#[test]
fn line_safe_only_touches_layout() {
    let m = parse("{\"jsonrpc\":\"2.0\",\r\n \"method\":\"a\\nb\"}").unwrap();
    let safe = m.line_safe();
    assert!(!safe.contains(&b'\n'));
    let back = Message::parse(safe).unwrap();
    assert_eq!(back.method(), Some("a\nb"));
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Message::parse(Bytes::from(bytes));
    }

    #[test]
    fn any_id_round_trips(n in any::<i64>(), s in "[a-zA-Z0-9 _\\-]{0,20}") {
        for id in [n.to_string(), serde_json::Value::from(s.clone()).to_string()] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m"}}"#);
            let m = parse(&text).unwrap();
            prop_assert_eq!(m.id().unwrap().as_json(), id.as_str());
            let reply = Message::error_reply(m.id(), PROXY_ERROR, "x");
            let back = Message::parse(reply.raw().clone()).unwrap();
            prop_assert_eq!(back.id(), m.id());
        }
    }
}
