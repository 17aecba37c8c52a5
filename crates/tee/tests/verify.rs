//! The offline verifier accepts an honest bundle and rejects every tampering: a changed byte anywhere, outputs
//! of two sessions combined, a wrong or self-declared signer, stale or future time, a wrong nonce, dropped or
//! reordered records, inconsistent lengths and ranges — including inconsistencies signed by the real TEE keys.

use prost::Message;
use tessera_tee::proto::{
    BodyType, Bundle, KOutput, ProofStream, RangeType, RecordInfo, RequestRange, ResponseEnd,
    ResponseRange, SignedMessage, TOutput,
};
use tessera_tee::signing::{Signer, sha256};
use tessera_tee::verify::{VerifierConfig, VerifyError, verify_bundle, verify_bundle_bytes};

const NOW: u64 = 1_800_000_000_000;
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\nCookie: s3cret\r\nX-Proof: abc\r\nConnection: close\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\n{\"token\":\"hidden!\"}";

/// Honest outputs of one session, before signing.
struct Fixture {
    k_signer: Signer,
    t_signer: Signer,
    k: KOutput,
    t: TOutput,
    /// The ciphertext and the keystream of the revealed bytes; their digests are signed into the outputs
    /// by [`Fixture::sign`].
    ciphertext: Vec<u8>,
    keystream: Vec<u8>,
    /// The whole keystream and ciphertext, hidden positions included (never in an honest bundle).
    full_keystream: Vec<u8>,
    full_ciphertext: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> u32 {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle") as u32
}

impl Fixture {
    fn new(session: u8) -> Self {
        let session_id = vec![session; 16];
        let cookie = RequestRange {
            start: find(REQUEST, b"s3cret"),
            length: 6,
            r#type: RangeType::Sensitive as i32,
        };
        let proof = RequestRange {
            start: find(REQUEST, b"abc"),
            length: 3,
            r#type: RangeType::SensitiveProof as i32,
        };
        let mut redacted = REQUEST.to_vec();
        let proof_stream = vec![0x55u8, 0x66, 0x77];
        for (i, s) in [0x11u8, 0x22, 0x33, 0x44, 0x55, 0x66].iter().enumerate() {
            redacted[cookie.start as usize + i] ^= s;
        }
        for (i, s) in proof_stream.iter().enumerate() {
            redacted[proof.start as usize + i] ^= s;
        }
        let full_keystream: Vec<u8> = (0..RESPONSE.len())
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
            .collect();
        let ciphertext: Vec<u8> = RESPONSE
            .iter()
            .zip(&full_keystream)
            .map(|(p, k)| p ^ k)
            .collect();
        let split = 20u32;
        let records = vec![
            RecordInfo {
                seq: 0,
                content_type: 22,
                length: 200,
            }, // NewSessionTicket: not content
            RecordInfo {
                seq: 1,
                content_type: 23,
                length: split,
            },
            RecordInfo {
                seq: 2,
                content_type: 23,
                length: RESPONSE.len() as u32 - split,
            },
            RecordInfo {
                seq: 3,
                content_type: 21,
                length: 2,
            }, // close_notify
        ];
        let hidden_start = find(RESPONSE, b"hidden!") as u64;
        let hidden = [ResponseRange {
            start: hidden_start,
            length: 7,
        }];
        let keystream =
            tessera_tee::verify::revealed_bytes(&full_keystream, &hidden).expect("in bounds");
        assert_eq!(keystream.len(), RESPONSE.len() - 7);
        let full_ciphertext = ciphertext;
        let ciphertext =
            tessera_tee::verify::revealed_bytes(&full_ciphertext, &hidden).expect("in bounds");
        let k = KOutput {
            session_id: session_id.clone(),
            timestamp_ms: NOW,
            nonce: b"verifier-nonce".to_vec(),
            hostname: "example.com".into(),
            port: 443,
            cipher_suite: 0x1301,
            tls_version: 0x0304,
            redacted_request: redacted,
            request_ranges: vec![cookie, proof],
            response_keystream_sha256: Vec::new(),
            response_ranges: hidden.to_vec(),
            certificate: None,
            records: records.clone(),
            response_end: ResponseEnd::CloseNotify as i32,
            t_output_digest: Vec::new(),
        };
        let t = TOutput {
            session_id,
            timestamp_ms: NOW + 3,
            nonce: b"verifier-nonce".to_vec(),
            response_ciphertext_sha256: Vec::new(),
            request_proof_streams: vec![ProofStream {
                start: proof.start,
                stream: proof_stream,
            }],
            records,
            transcript_hash: Vec::new(),
        };
        Fixture {
            k_signer: Signer::generate(),
            t_signer: Signer::generate(),
            k,
            t,
            ciphertext,
            keystream,
            full_keystream,
            full_ciphertext,
        }
    }

    /// Signs as the TEEs do: T_OUTPUT first, then K_OUTPUT bound to its digest.
    fn sign(&self) -> Bundle {
        let mut t = self.t.clone();
        t.response_ciphertext_sha256 = sha256(&self.ciphertext).to_vec();
        let (t_signed, digest) = self
            .t_signer
            .sign_t_output(&mut t, &self.k.request_ranges)
            .unwrap();
        let mut k = self.k.clone();
        k.response_keystream_sha256 = sha256(&self.keystream).to_vec();
        let k_signed = self.k_signer.sign_k_output(&mut k, digest).unwrap();
        Bundle {
            k_output: Some(k_signed),
            t_output: Some(t_signed),
            attestations: Vec::new(),
            response_ciphertext: self.ciphertext.clone(),
            response_keystream: self.keystream.clone(),
        }
    }

    fn config(&self) -> VerifierConfig {
        let mut config = VerifierConfig::new(self.k_signer.address(), self.t_signer.address());
        config.now_ms = NOW + 1000;
        config.nonce = Some(b"verifier-nonce".to_vec());
        config
    }
}

#[test]
fn honest_bundle_verifies_and_reveals_what_it_should() {
    let f = Fixture::new(1);
    let bundle = f.sign();
    let proof = verify_bundle_bytes(&bundle.encode_to_vec(), &f.config()).unwrap();
    assert_eq!(
        proof.request,
        b"GET / HTTP/1.1\r\nHost: example.com\r\nCookie: ******\r\nX-Proof: abc\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(proof.proof_ranges.len(), 1);
    assert_eq!(
        proof.response,
        b"HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\n{\"token\":\"*******\"}"
    );
    assert_eq!(proof.session_id, vec![1u8; 16]);
}

fn body_flip(signed: &mut Option<SignedMessage>, index: usize) {
    let s = signed.as_mut().unwrap();
    let i = index % s.body.len();
    s.body[i] ^= 1;
}

#[test]
fn any_changed_body_byte_is_rejected() {
    let f = Fixture::new(1);
    let bundle = f.sign();
    let k_len = bundle.k_output.as_ref().unwrap().body.len();
    let t_len = bundle.t_output.as_ref().unwrap().body.len();
    for i in 0..k_len {
        let mut b = bundle.clone();
        body_flip(&mut b.k_output, i);
        assert!(verify_bundle(&b, &f.config()).is_err(), "K_OUTPUT byte {i}");
    }
    for i in 0..t_len {
        let mut b = bundle.clone();
        body_flip(&mut b.t_output, i);
        assert!(verify_bundle(&b, &f.config()).is_err(), "T_OUTPUT byte {i}");
    }
    for i in 0..65 {
        let mut b = bundle.clone();
        b.k_output.as_mut().unwrap().signature[i] ^= 0x80;
        assert!(
            verify_bundle(&b, &f.config()).is_err(),
            "signature byte {i}"
        );
    }
}

#[test]
fn wrong_or_self_declared_signers_are_rejected() {
    let f = Fixture::new(1);
    let bundle = f.sign();
    // A forger signs with its own keys: the bundle is self-consistent but the signers are not the pinned ones.
    let forger = Fixture {
        k_signer: Signer::generate(),
        t_signer: Signer::generate(),
        ..Fixture::new(1)
    };
    assert!(matches!(
        verify_bundle(&forger.sign(), &f.config()),
        Err(VerifyError::WrongSigner { .. })
    ));
    // K and T swapped.
    let mut swapped = f.config();
    std::mem::swap(&mut swapped.tee_k_signer, &mut swapped.tee_t_signer);
    assert!(matches!(
        verify_bundle(&bundle, &swapped),
        Err(VerifyError::WrongSigner { .. })
    ));
    let mut same = f.config();
    same.tee_t_signer = same.tee_k_signer;
    assert_eq!(verify_bundle(&bundle, &same), Err(VerifyError::SameSigner));
    // Mislabelled body types.
    let mut b = bundle.clone();
    b.k_output.as_mut().unwrap().body_type = BodyType::TOutput as i32;
    assert_eq!(
        verify_bundle(&b, &f.config()),
        Err(VerifyError::Missing("K_OUTPUT"))
    );
}

#[test]
fn outputs_of_two_sessions_cannot_be_combined() {
    let a = Fixture::new(1);
    let mut b = Fixture::new(2);
    b.k_signer = Signer::from_secret_bytes(&[7u8; 32]).unwrap();
    b.t_signer = Signer::from_secret_bytes(&[8u8; 32]).unwrap();
    let mut a2 = Fixture::new(1);
    a2.k_signer = Signer::from_secret_bytes(&[7u8; 32]).unwrap();
    a2.t_signer = Signer::from_secret_bytes(&[8u8; 32]).unwrap();
    let config = a2.config();
    let (ba, bb) = (a2.sign(), b.sign());
    let mixed = Bundle {
        k_output: ba.k_output.clone(),
        t_output: bb.t_output.clone(),
        ..ba.clone()
    };
    assert_eq!(
        verify_bundle(&mixed, &config),
        Err(VerifyError::Binding("different session ids"))
    );
    // Same session id, but another T_OUTPUT (e.g. a second run of TEE_T): the digest binds K to one T only.
    let mut other = Fixture::new(1);
    other.k_signer = Signer::from_secret_bytes(&[7u8; 32]).unwrap();
    other.t_signer = Signer::from_secret_bytes(&[8u8; 32]).unwrap();
    other.t.timestamp_ms += 1;
    let mixed = Bundle {
        k_output: ba.k_output.clone(),
        t_output: other.sign().t_output,
        ..ba.clone()
    };
    assert!(matches!(
        verify_bundle(&mixed, &config),
        Err(VerifyError::Binding(_))
    ));
    drop(a);
}

/// Re-signs a fixture after `edit`, as if an honest-but-buggy TEE had signed inconsistent data.
fn signed_after(edit: impl FnOnce(&mut Fixture)) -> Result<(), VerifyError> {
    let mut f = Fixture::new(1);
    edit(&mut f);
    verify_bundle(&f.sign(), &f.config()).map(|_| ())
}

#[test]
fn time_and_nonce_are_enforced() {
    assert_eq!(
        signed_after(|f| f.k.timestamp_ms = NOW - 11 * 60 * 1000),
        Err(VerifyError::Time("an output is too old"))
    );
    assert_eq!(
        signed_after(|f| f.t.timestamp_ms = NOW + 60 * 1000),
        Err(VerifyError::Time("an output is dated in the future"))
    );
    assert_eq!(
        signed_after(|f| f.t.timestamp_ms = NOW - 6000),
        Err(VerifyError::Time("the two outputs are too far apart"))
    );
    assert_eq!(
        signed_after(|f| {
            f.k.nonce = b"other".to_vec();
            f.t.nonce = b"other".to_vec();
        }),
        Err(VerifyError::Nonce)
    );
    assert_eq!(
        signed_after(|f| f.t.nonce = b"other".to_vec()),
        Err(VerifyError::Nonce)
    );
}

#[test]
fn records_must_be_contiguous_agreed_and_complete() {
    let drop_middle = |f: &mut Fixture| {
        f.k.records.remove(1);
        f.t.records.remove(1);
    };
    assert!(matches!(
        signed_after(drop_middle),
        Err(VerifyError::Records(_))
    ));
    assert!(matches!(
        signed_after(|f| f.t.records[1].length += 1),
        Err(VerifyError::Binding(_))
    ));
    assert!(matches!(
        signed_after(|f| {
            f.k.records.pop();
            f.t.records.pop();
        }),
        Err(VerifyError::Records(
            "close_notify claimed but the last record is no alert"
        ))
    ));
    assert!(matches!(
        signed_after(|f| f.k.response_end = ResponseEnd::Unspecified as i32),
        Err(VerifyError::Records(_))
    ));
    assert!(matches!(
        signed_after(|f| f.k.tls_version = 0x0303),
        Err(VerifyError::Records(_))
    ));
    assert!(matches!(
        signed_after(|f| {
            f.keystream.pop();
        }),
        Err(VerifyError::Records(_))
    ));
    assert!(matches!(
        signed_after(|f| {
            f.ciphertext.push(0);
        }),
        Err(VerifyError::Records(_))
    ));
}

#[test]
fn the_bundles_bytes_are_the_signed_ones() {
    let f = Fixture::new(1);
    let honest = f.sign();
    // A ciphertext byte changed after signing: not what T_OUTPUT signed.
    let mut bundle = honest.clone();
    bundle.response_ciphertext[3] ^= 1;
    assert_eq!(
        verify_bundle(&bundle, &f.config()),
        Err(VerifyError::Binding(
            "the bundle's ciphertext is not the one T_OUTPUT signed"
        ))
    );
    // A revealed keystream byte changed: not what K_OUTPUT signed.
    let mut bundle = honest.clone();
    bundle.response_keystream[2] ^= 1;
    assert_eq!(
        verify_bundle(&bundle, &f.config()),
        Err(VerifyError::Binding(
            "the bundle's keystream is not the one K_OUTPUT signed"
        ))
    );
    // The whole keystream, hidden positions included (it would decrypt the hidden bytes): refused.
    let mut bundle = honest.clone();
    bundle.response_keystream = f.full_keystream.clone();
    assert!(matches!(
        verify_bundle(&bundle, &f.config()),
        Err(VerifyError::Records(_))
    ));
    // The whole ciphertext (what T_OUTPUT signed before format 3): refused.
    let mut bundle = honest.clone();
    bundle.response_ciphertext = f.full_ciphertext.clone();
    assert!(matches!(
        verify_bundle(&bundle, &f.config()),
        Err(VerifyError::Records(_))
    ));
    // The bytes of another session of the same length: refused too.
    let mut other = Fixture::new(2);
    other.keystream[0] ^= 0x80;
    let mut bundle = honest;
    bundle.response_keystream = other.keystream;
    assert!(matches!(
        verify_bundle(&bundle, &f.config()),
        Err(VerifyError::Binding(_))
    ));
}

#[test]
fn ranges_are_checked() {
    assert!(matches!(
        signed_after(|f| {
            f.t.request_proof_streams.clear();
        }),
        Err(VerifyError::Ranges(_))
    ));
    assert!(matches!(
        signed_after(|f| f.t.request_proof_streams[0].stream.push(0)),
        Err(VerifyError::Ranges(_))
    ));
    assert!(matches!(
        signed_after(|f| f.k.request_ranges[1].start = f.k.request_ranges[0].start),
        Err(VerifyError::Ranges(_))
    ));
    assert!(matches!(
        signed_after(|f| f.k.request_ranges[0].length = 10_000),
        Err(VerifyError::Ranges(_))
    ));
    assert!(matches!(
        signed_after(|f| f.k.response_ranges[0].length = 10_000),
        Err(VerifyError::Ranges(_))
    ));
    assert!(matches!(
        signed_after(|f| f.k.request_ranges[0].r#type = 0),
        Err(VerifyError::Ranges(_))
    ));
}

#[test]
fn garbage_never_panics() {
    let f = Fixture::new(1);
    for len in 0..64 {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        assert!(verify_bundle_bytes(&junk, &f.config()).is_err());
    }
    assert_eq!(
        verify_bundle(&Bundle::default(), &f.config()),
        Err(VerifyError::Missing("K_OUTPUT"))
    );
}

#[test]
fn a_bundle_of_millions_of_empty_attestations_is_refused_before_decoding() {
    let f = Fixture::new(1);
    // An honest bundle followed by 2 M empty attestations (2 bytes each on the wire, ~110 MB decoded).
    let mut bytes = f.sign().encode_to_vec();
    bytes.extend_from_slice(&[0x1a, 0x00].repeat(2_000_000));
    let refused = verify_bundle_bytes(&bytes, &f.config()).err();
    assert_eq!(
        refused.map(|e| e.to_string()).as_deref(),
        Some("bundle refused: Bundle.attestations holds more than 8 elements")
    );
    // Past the size limit, the bytes are not even walked.
    let huge = vec![0u8; tessera_tee::proof_file::MAX_BUNDLE_LEN + 1];
    assert_eq!(
        verify_bundle_bytes(&huge, &f.config()).err(),
        Some(VerifyError::TooLarge(huge.len()))
    );
}

#[test]
fn http_complete_is_refused_as_the_end_of_the_response() {
    // Signed by the real keys, no close_notify: the end would rest on the signer's word alone.
    let cut_short = signed_after(|f| {
        f.k.records.pop();
        f.t.records.pop();
        f.k.response_end = ResponseEnd::HttpComplete as i32;
    });
    assert_eq!(
        cut_short.err(),
        Some(VerifyError::Records(
            "http_complete as the end of the response is not supported (only close_notify is proven)"
        ))
    );
    assert!(signed_after(|f| f.k.response_end = ResponseEnd::HttpComplete as i32).is_err());
}
