//! Fuzzes the wire codec: the frame decoder and every payload decoder must reject any input without
//! panicking, and whatever decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_channel::frame::{self, ClientHello, Plaintext, ServerHello, SessionEstablished};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = frame::decode(data) {
        assert_eq!(frame::encode(f.kind, f.noise), data);
    }
    if let Ok(hello) = ClientHello::decode(data) {
        assert_eq!(&hello.encode()[..], data);
    }
    let _ = ServerHello::decode(data);
    match Plaintext::decode(data) {
        Ok(Plaintext::SessionEstablished(est)) => {
            let again = SessionEstablished { ..est }.encode();
            assert_eq!(again, data);
        }
        Ok(Plaintext::Data { body, .. }) => assert_eq!(body, &data[1..]),
        Err(_) => {}
    }
});
