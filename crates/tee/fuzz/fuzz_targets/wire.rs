//! The session-message codec on arbitrary bytes: decoding never panics, a message is refused for another
//! session, and whatever decodes re-encodes to an envelope that decodes to the same body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_tee::wire::{self, WireError};

fuzz_target!(|data: &[u8]| {
    let Ok((session, body)) = wire::decode(data, None) else {
        return;
    };
    let _ = wire::body_name(&body);
    let mut other = session;
    other[0] ^= 1;
    assert_eq!(
        wire::decode(data, Some(&other)).err(),
        Some(WireError::WrongSession)
    );
    let bytes = wire::encode(&session, body.clone());
    let (again, decoded) =
        wire::decode(&bytes[..], Some(&session)).expect("re-encoded envelope decodes");
    assert_eq!(again, session);
    assert_eq!(decoded, body);
});
