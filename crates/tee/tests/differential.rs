//! Differential tests: the split AEAD (TEE_K keystream + tag secrets, TEE_T tag) equals the one-shot
//! aes-gcm / chacha20poly1305 crates byte for byte, for every AEAD and every suite's record layer; any flipped
//! bit in ciphertext, tag, AAD or sequence number is rejected.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use proptest::prelude::*;
use tessera_tee::record::{ContentType, MAX_PLAINTEXT, Record};
use tessera_tee::{
    AeadAlgorithm, CipherSuite, RecordContent, TeeError, TeeKKeys, TeeKReader, TeeKWriter,
    TlsVersion, compute_tag, open_via_split, seal_via_split, verify_tag,
};

/// Deterministic filler so that large inputs cost no proptest shrinking trees.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The oracle: one-shot AEAD encryption, returning ciphertext and tag.
fn oracle_seal(
    alg: AeadAlgorithm,
    key: &[u8],
    nonce: &[u8; 12],
    aad: &[u8],
    pt: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let mut buf = pt.to_vec();
    let tag = match alg {
        AeadAlgorithm::Aes128Gcm => aes_gcm::Aes128Gcm::new_from_slice(key)
            .unwrap()
            .encrypt_in_place_detached(nonce.into(), aad, &mut buf)
            .unwrap()
            .to_vec(),
        AeadAlgorithm::Aes256Gcm => aes_gcm::Aes256Gcm::new_from_slice(key)
            .unwrap()
            .encrypt_in_place_detached(nonce.into(), aad, &mut buf)
            .unwrap()
            .to_vec(),
        AeadAlgorithm::ChaCha20Poly1305 => chacha20poly1305::ChaCha20Poly1305::new_from_slice(key)
            .unwrap()
            .encrypt_in_place_detached(nonce.into(), aad, &mut buf)
            .unwrap()
            .to_vec(),
    };
    (buf, tag)
}

fn flip(bytes: &mut [u8], bit: usize) {
    let bit = bit % (bytes.len() * 8);
    bytes[bit / 8] ^= 1 << (bit % 8);
}

fn check_aead(
    alg: AeadAlgorithm,
    seed: u64,
    len: usize,
    aad_len: usize,
    bit: usize,
) -> Result<(), TestCaseError> {
    let key = bytes(seed, alg.key_len());
    let nonce: [u8; 12] = bytes(seed ^ 0x55, 12).try_into().unwrap();
    let aad = bytes(seed ^ 0xAA, aad_len);
    let pt = bytes(seed ^ 0xF0, len);

    let keys = TeeKKeys::new(alg, &key).unwrap();
    let (keystream, tag_secrets) = keys.record_secrets(&nonce, len).unwrap();
    let mut ct = pt.clone();
    keystream.apply(&mut ct).unwrap();
    let tag = compute_tag(&tag_secrets, &aad, &ct);

    let (oracle_ct, oracle_tag) = oracle_seal(alg, &key, &nonce, &aad, &pt);
    prop_assert_eq!(&ct, &oracle_ct);
    prop_assert_eq!(&tag[..], &oracle_tag[..]);
    prop_assert!(verify_tag(&tag_secrets, &aad, &ct, &tag).is_ok());

    let mut bad_tag = tag;
    flip(&mut bad_tag, bit);
    prop_assert!(matches!(
        verify_tag(&tag_secrets, &aad, &ct, &bad_tag),
        Err(TeeError::BadTag)
    ));
    if !ct.is_empty() {
        let mut bad_ct = ct.clone();
        flip(&mut bad_ct, bit);
        prop_assert!(verify_tag(&tag_secrets, &aad, &bad_ct, &tag).is_err());
    }
    let mut bad_aad = aad.clone();
    if bad_aad.is_empty() {
        bad_aad.push(0);
    } else {
        flip(&mut bad_aad, bit);
    }
    prop_assert!(verify_tag(&tag_secrets, &bad_aad, &ct, &tag).is_err());
    prop_assert!(verify_tag(&tag_secrets, &aad, &ct, &tag[..15]).is_err());
    Ok(())
}

/// The record as an independent implementation of RFC 8446 §5.2 / RFC 5246 §6.2.3.3 / RFC 7905 builds it.
fn oracle_record(suite: CipherSuite, key: &[u8], iv: &[u8; 12], seq: u64, data: &[u8]) -> Vec<u8> {
    let mut nonce = *iv;
    for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
        *n ^= s;
    }
    match suite.version() {
        TlsVersion::Tls13 => {
            let mut inner = data.to_vec();
            inner.push(23);
            let len = (inner.len() + 16) as u16;
            let header = [23, 3, 3, (len >> 8) as u8, len as u8];
            let (ct, tag) = oracle_seal(suite.aead(), key, &nonce, &header, &inner);
            [&header[..], &ct, &tag].concat()
        }
        TlsVersion::Tls12 => {
            let mut aad = seq.to_be_bytes().to_vec();
            aad.extend([23, 3, 3, (data.len() >> 8) as u8, data.len() as u8]);
            let (ct, tag) = oracle_seal(suite.aead(), key, &nonce, &aad, data);
            let explicit: &[u8] = if suite.aead().is_gcm() {
                &nonce[4..]
            } else {
                &[]
            };
            let len = (explicit.len() + ct.len() + 16) as u16;
            let header = [23, 3, 3, (len >> 8) as u8, len as u8];
            [&header[..], explicit, &ct, &tag].concat()
        }
    }
}

fn check_record(
    suite: CipherSuite,
    seed: u64,
    len: usize,
    seq: u64,
    bit: usize,
) -> Result<(), TestCaseError> {
    let key = bytes(seed, suite.aead().key_len());
    let iv: [u8; 12] = bytes(seed ^ 0x77, 12).try_into().unwrap();
    let data = bytes(seed ^ 0x33, len);

    let mut writer = TeeKWriter::new(suite, &key, &iv, seq).unwrap();
    let record = seal_via_split(&mut writer, ContentType::ApplicationData, &data).unwrap();
    let wire = record.to_bytes();
    prop_assert_eq!(&wire, &oracle_record(suite, &key, &iv, seq, &data));
    prop_assert_eq!(writer.next_seq(), seq + 1);

    let mut reader = TeeKReader::new(suite, &key, &iv, seq).unwrap();
    let opened = open_via_split(&mut reader, &record).unwrap();
    prop_assert_eq!(opened, RecordContent::ApplicationData(data.clone()));

    // A flipped bit anywhere in the payload (explicit nonce, ciphertext or tag) is rejected.
    let mut tampered = record.clone();
    flip(&mut tampered.payload, bit);
    let mut reader = TeeKReader::new(suite, &key, &iv, seq).unwrap();
    prop_assert!(matches!(
        open_via_split(&mut reader, &tampered),
        Err(TeeError::BadTag)
    ));

    // A different sequence number (one flipped bit) is rejected.
    let other_seq = seq ^ (1u64 << (bit % 64));
    let mut reader = TeeKReader::new(suite, &key, &iv, other_seq).unwrap();
    prop_assert!(matches!(
        open_via_split(&mut reader, &record),
        Err(TeeError::BadTag)
    ));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn split_aead_equals_one_shot_aes128gcm(seed: u64, len in 0usize..=MAX_PLAINTEXT + 1, aad_len in 0usize..64, bit: usize) {
        check_aead(AeadAlgorithm::Aes128Gcm, seed, len, aad_len, bit)?;
    }

    #[test]
    fn split_aead_equals_one_shot_aes256gcm(seed: u64, len in 0usize..=MAX_PLAINTEXT + 1, aad_len in 0usize..64, bit: usize) {
        check_aead(AeadAlgorithm::Aes256Gcm, seed, len, aad_len, bit)?;
    }

    #[test]
    fn split_aead_equals_one_shot_chacha20poly1305(seed: u64, len in 0usize..=MAX_PLAINTEXT + 1, aad_len in 0usize..64, bit: usize) {
        check_aead(AeadAlgorithm::ChaCha20Poly1305, seed, len, aad_len, bit)?;
    }

    #[test]
    fn split_records_equal_one_shot_records_for_every_suite(
        suite_index in 0usize..9, seed: u64, len in 0usize..=MAX_PLAINTEXT, seq in 0u64..u64::MAX - 1, bit: usize,
    ) {
        check_record(CipherSuite::ALL[suite_index], seed, len, seq, bit)?;
    }
}

#[test]
fn every_suite_at_the_edges() {
    for suite in CipherSuite::ALL {
        for len in [0, 1, 15, 16, 17, 4095, MAX_PLAINTEXT] {
            check_record(suite, len as u64 + 1, len, 1, len * 7).unwrap();
        }
    }
    for alg in AeadAlgorithm::ALL {
        for len in [0, 1, 16, 63, 64, 65, MAX_PLAINTEXT + 1] {
            check_aead(alg, 99, len, 13, 5).unwrap();
        }
    }
}

#[test]
fn oversized_and_short_records_are_errors() {
    for suite in CipherSuite::ALL {
        let key = vec![1u8; suite.aead().key_len()];
        let mut writer = TeeKWriter::new(suite, &key, &[2; 12], 0).unwrap();
        assert!(matches!(
            writer.encrypt(ContentType::ApplicationData, &vec![0; MAX_PLAINTEXT + 1], 0),
            Err(TeeError::RecordTooLarge { .. })
        ));
        let mut reader = TeeKReader::new(suite, &key, &[2; 12], 0).unwrap();
        let short = Record::new(ContentType::ApplicationData, vec![0; 10]).unwrap();
        assert!(open_via_split(&mut reader, &short).is_err());
        let huge = Record::new(ContentType::ApplicationData, vec![0; 20_000]).unwrap();
        assert!(matches!(
            open_via_split(&mut reader, &huge),
            Err(TeeError::RecordTooLarge { .. })
        ));
    }
}

#[test]
fn sequence_numbers_never_wrap() {
    let suite = CipherSuite::Tls13Aes128GcmSha256;
    let mut writer = TeeKWriter::new(suite, &[0; 16], &[0; 12], u64::MAX).unwrap();
    assert!(matches!(
        writer.encrypt(ContentType::ApplicationData, b"x", 0),
        Err(TeeError::SequenceExhausted)
    ));
}

#[test]
fn tls13_padding_and_post_handshake_records_through_the_split_path() {
    for suite in CipherSuite::ALL
        .into_iter()
        .filter(|s| s.version() == TlsVersion::Tls13)
    {
        let key = vec![4u8; suite.aead().key_len()];
        let mut writer = TeeKWriter::new(suite, &key, &[5; 12], 0).unwrap();
        let mut reader = TeeKReader::new(suite, &key, &[5; 12], 0).unwrap();
        let ticket = writer
            .encrypt(ContentType::Handshake, &[4, 0, 0, 2, 7, 7], 10)
            .unwrap();
        let tag = compute_tag(&ticket.tag_secrets, &ticket.aad, &ticket.ciphertext);
        let ticket = ticket.into_record(&tag).unwrap();
        assert_eq!(
            ticket.header.content_type,
            ContentType::ApplicationData,
            "outer type hides the real one"
        );
        assert_eq!(
            open_via_split(&mut reader, &ticket).unwrap(),
            RecordContent::Handshake(vec![tessera_tee::HandshakeMessage::NewSessionTicket])
        );
        let data = writer
            .encrypt(ContentType::ApplicationData, b"body", 3)
            .unwrap();
        let tag = compute_tag(&data.tag_secrets, &data.aad, &data.ciphertext);
        let data = data.into_record(&tag).unwrap();
        assert_eq!(
            open_via_split(&mut reader, &data).unwrap(),
            RecordContent::ApplicationData(b"body".to_vec())
        );
        let update =
            seal_via_split(&mut writer, ContentType::Handshake, &[24, 0, 0, 1, 0]).unwrap();
        assert!(matches!(
            open_via_split(&mut reader, &update),
            Err(TeeError::KeyUpdateUnsupported)
        ));
    }
}

#[test]
fn key_updates_from_traffic_secrets() {
    use tessera_tee::{HandshakeMessage, seal_key_update_via_split};
    for suite in CipherSuite::ALL
        .into_iter()
        .filter(|s| s.version() == TlsVersion::Tls13)
    {
        let hash_len = if suite == CipherSuite::Tls13Aes256GcmSha384 {
            48
        } else {
            32
        };
        let secret = bytes(suite as u64 + 5, hash_len);
        let mut writer = TeeKWriter::from_traffic_secret(suite, &secret, 7).unwrap();
        let mut reader = TeeKReader::from_traffic_secret(suite, &secret, 7).unwrap();
        let mut stale = TeeKReader::from_traffic_secret(suite, &secret, 7).unwrap();

        for generation in 0..3 {
            let update = seal_key_update_via_split(&mut writer, generation == 1).unwrap();
            assert_eq!(writer.next_seq(), 0);
            assert_eq!(
                open_via_split(&mut reader, &update).unwrap(),
                RecordContent::Handshake(vec![HandshakeMessage::KeyUpdate {
                    update_requested: generation == 1
                }])
            );
            assert_eq!(reader.next_seq(), 0);
            let data = seal_via_split(
                &mut writer,
                ContentType::ApplicationData,
                b"next generation",
            )
            .unwrap();
            assert_eq!(
                open_via_split(&mut reader, &data).unwrap(),
                RecordContent::ApplicationData(b"next generation".to_vec())
            );
            if generation == 0 {
                // A reader that skipped the KeyUpdate record cannot open the next generation.
                assert!(matches!(
                    open_via_split(&mut stale, &data),
                    Err(TeeError::BadTag)
                ));
            }
        }
        // A writer built from key and IV only cannot update.
        let mut plain =
            TeeKWriter::new(suite, &vec![1; suite.aead().key_len()], &[1; 12], 0).unwrap();
        assert!(matches!(
            plain.encrypt_key_update(false),
            Err(TeeError::KeyUpdateUnsupported)
        ));
        assert_eq!(plain.next_seq(), 0, "nothing was encrypted");
        // TLS 1.2 suites have no traffic secret.
        assert!(
            TeeKWriter::from_traffic_secret(CipherSuite::Tls12EcdheRsaAes128GcmSha256, &secret, 0)
                .is_err()
        );
    }
}
