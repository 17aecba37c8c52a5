//! No type that holds a key, IV, keystream or tag secret prints it through `Debug` (plain or pretty).

use tessera_tee::record::{ContentType, RecordSplitter};
use tessera_tee::{
    AeadAlgorithm, CipherSuite, EstablishedSession, TeeKKeys, TeeKReader, TeeKWriter,
};

const KEY_BYTE: u8 = 0xC3;
const IV_BYTE: u8 = 0x5A;

/// Every way the bytes could show up: hex (either case, with or without separators) and decimal lists.
fn assert_hidden(what: &str, text: &str, secret: &[u8]) {
    let lower = text.to_lowercase();
    let hex = hex::encode(secret);
    let mut needles = vec![
        hex[..8].to_string(),
        format!("{}, {}", secret[0], secret[1]),
        format!("{:#x}, {:#x}", secret[0], secret[1]),
        format!("{:02x} {:02x}", secret[0], secret[1]),
    ];
    if secret[0] >= 100 {
        needles.push(secret[0].to_string()); // three digits: no length or suite name contains it by chance
    }
    for needle in needles {
        assert!(!lower.contains(&needle), "{what} leaks {needle:?}: {text}");
    }
}

fn both(value: &impl std::fmt::Debug) -> String {
    format!("{value:?} {value:#?}")
}

#[test]
fn secret_holders_print_no_key_material() {
    for suite in CipherSuite::ALL {
        let key = vec![KEY_BYTE; suite.aead().key_len()];
        let iv = [IV_BYTE; 12];

        let keys = TeeKKeys::new(suite.aead(), &key).unwrap();
        assert_hidden("TeeKKeys", &both(&keys), &key);
        let (keystream, tag_secrets) = keys.record_secrets(&[1; 12], 64).unwrap();
        assert_hidden("Keystream", &both(&keystream), keystream.expose_secret());
        assert_hidden(
            "TagSecrets",
            &both(&tag_secrets),
            tag_secrets.expose_secret(),
        );

        let mut writer = TeeKWriter::new(suite, &key, &iv, 1).unwrap();
        let outgoing = writer
            .encrypt(ContentType::ApplicationData, b"hello", 0)
            .unwrap();
        assert_hidden(
            "OutgoingRecord",
            &both(&outgoing),
            outgoing.tag_secrets.expose_secret(),
        );
        assert_hidden("TeeKWriter", &both(&writer), &key);
        assert_hidden("TeeKWriter", &both(&writer), &iv);

        let mut reader = TeeKReader::new(suite, &key, &iv, 1).unwrap();
        let record = outgoing.into_record(&[0; 16]).unwrap();
        let parts = tessera_tee::ProtectedPayload::parse(suite, &record).unwrap();
        let incoming = reader
            .next_record_secrets(&record.header, parts.explicit_nonce)
            .unwrap();
        let text = both(&incoming);
        assert_hidden("IncomingSecrets", &text, incoming.keystream.expose_secret());
        assert_hidden(
            "IncomingSecrets",
            &text,
            incoming.tag_secrets.expose_secret(),
        );

        let session = EstablishedSession {
            suite,
            alpn: None,
            certificates: Vec::new(),
            writer: TeeKWriter::new(suite, &key, &iv, 1).unwrap(),
            reader: TeeKReader::new(suite, &key, &iv, 1).unwrap(),
            pending_records: Vec::new(),
            splitter: RecordSplitter::any_version(),
        };
        let text = both(&session);
        assert_hidden("EstablishedSession", &text, &key);
        assert_hidden("EstablishedSession", &text, &iv);
        assert!(text.contains("redacted"), "{text}");
    }
    // TLS 1.3 directions that also hold their traffic secret.
    for suite in CipherSuite::ALL
        .into_iter()
        .filter(|s| s.version() == tessera_tee::TlsVersion::Tls13)
    {
        let len = if suite == CipherSuite::Tls13Aes256GcmSha384 {
            48
        } else {
            32
        };
        let secret = vec![KEY_BYTE; len];
        let writer = TeeKWriter::from_traffic_secret(suite, &secret, 0).unwrap();
        let text = both(&writer);
        assert_hidden("TeeKWriter(traffic secret)", &text, &secret);
        assert!(text.contains("TrafficSecret"), "{text}");
        let ts = tessera_tee::key_update::TrafficSecret::new(suite, &secret).unwrap();
        assert_hidden("TrafficSecret", &both(&ts), &secret);
        assert_hidden(
            "derived key",
            &both(&writer),
            ts.key().unwrap().expose_secret(),
        );
        assert_hidden(
            "derived iv",
            &both(&writer),
            ts.iv().unwrap().expose_secret(),
        );
    }
    // Tag secrets received by TEE_T.
    let secrets =
        tessera_tee::TagSecrets::from_bytes(AeadAlgorithm::Aes128Gcm, &[KEY_BYTE; 32]).unwrap();
    assert_hidden("TagSecrets", &both(&secrets), &[KEY_BYTE; 32]);
    let stream = tessera_tee::Keystream::from_bytes(vec![KEY_BYTE; 40]);
    assert_hidden("Keystream", &both(&stream), &[KEY_BYTE; 40]);
}
