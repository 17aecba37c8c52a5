//! What reaches the relay and its clients from outside: a frame from a client (the server decodes it), a
//! frame from the server (the client decodes it), a delivery's ciphertext (the recipient's Olm layer
//! parses and decrypts it) and a state file read from disk. None may panic; frames that decode must
//! re-encode to themselves.
//!
//! Built with `cfg(fuzzing)`, vodozemac skips its MAC and signature checks so that the fuzzer reaches
//! the parsers behind them: this target looks for panics, never for security properties.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tessera_relay::client::Delivery;
use tessera_relay::e2e::OlmDevice;
use tessera_relay::e2e::state::StateKey;
use tessera_relay::protocol::codec;
use tessera_relay::state_file::{StateFile, Unlock};

fn state_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tessera-relay-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir.join("fuzz.state")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            let _ = codec::salvage_req(input);
            if let Ok(request) = codec::decode_request(input) {
                let again = codec::decode_request(&codec::encode_request(&request))
                    .expect("an encoded request decodes");
                assert_eq!(again, request);
            }
        }
        1 => {
            if let Ok(reply) = codec::decode_reply(input) {
                let again = codec::decode_reply(&codec::encode_reply(&reply))
                    .expect("an encoded reply decodes");
                assert_eq!(again, reply);
            }
        }
        2 => {
            let mut device = OlmDevice::new();
            let delivery = Delivery {
                seq: 1,
                from_user: "bob".into(),
                from_device: "bob-laptop".into(),
                message_id: "m1".into(),
                ciphertext: String::from_utf8_lossy(input).into_owned(),
            };
            let _ = device.decrypt(&delivery);
        }
        _ => {
            let path = state_path();
            if std::fs::write(path, input).is_ok() {
                let _ = StateFile::open(path, Unlock::Key(StateKey::from_bytes([7; 32])));
            }
        }
    }
});
