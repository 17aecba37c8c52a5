//! What the bundle carries of the response: the revealed bytes' ciphertext and keystream only, each checked
//! against the digest its TEE signed before a proof is handed out.

use super::ClientError;
use bytes::Bytes;

use crate::proto::{KOutput, ResponseRange, SignedMessage, TOutput};

/// The revealed bytes of the response as the bundle carries them: (ciphertext, keystream), the hidden
/// ranges cut out; the keystream is plaintext XOR ciphertext there. `ciphertext` is the response's, record
/// by record. Made while the TEEs sign; [`signed_digests_match`] checks them against the outputs.
pub(super) fn revealed(
    plaintext: &[u8],
    ciphertext: &[Bytes],
    hidden: &[ResponseRange],
) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
    let pieces = ciphertext.iter().map(|b| &b[..]);
    if plaintext.len() != pieces.clone().map(<[u8]>::len).sum::<usize>() {
        return Err(ClientError::Protocol(
            "the response and its ciphertext differ in length".into(),
        ));
    }
    let bad = |e: crate::verify::VerifyError| ClientError::Protocol(format!("hidden ranges: {e}"));
    let revealed_ciphertext = crate::verify::revealed_bytes_of(pieces, hidden).map_err(bad)?;
    let mut revealed_keystream = crate::verify::revealed_bytes(plaintext, hidden).map_err(bad)?;
    for (k, c) in revealed_keystream.iter_mut().zip(&revealed_ciphertext) {
        *k ^= c;
    }
    Ok((revealed_ciphertext, revealed_keystream))
}

/// Checks that K_OUTPUT signed the SHA-256 of `keystream` and T_OUTPUT that of `ciphertext`, the revealed
/// bytes the bundle carries: a TEE of another protocol version would otherwise make a proof no verifier
/// accepts, found out only by the verifier.
pub(super) fn signed_digests_match(
    k_output: Option<&SignedMessage>,
    t_output: Option<&SignedMessage>,
    hidden: &[ResponseRange],
    keystream: &[u8],
    ciphertext: &[u8],
) -> Result<(), ClientError> {
    use prost::Message as _;
    let bad = |what: &str| ClientError::Protocol(format!("{what} (a TEE of another version?)"));
    let k = k_output
        .and_then(|m| KOutput::decode(m.body.as_slice()).ok())
        .ok_or_else(|| bad("K_OUTPUT does not decode"))?;
    if k.response_ranges != hidden {
        return Err(bad(
            "TEE_K signed other hidden ranges than the client asked for",
        ));
    }
    if k.response_keystream_sha256 != crate::signing::sha256(keystream) {
        return Err(bad("TEE_K signed another keystream than the revealed one"));
    }
    let t = t_output
        .and_then(|m| TOutput::decode(m.body.as_slice()).ok())
        .ok_or_else(|| bad("T_OUTPUT does not decode"))?;
    if t.response_ciphertext_sha256 != crate::signing::sha256(ciphertext) {
        return Err(bad("TEE_T signed another ciphertext than the revealed one"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::BodyType;
    use crate::signing::sha256;
    use prost::Message as _;

    fn k_output(keystream_sha256: Vec<u8>) -> SignedMessage {
        k_output_hiding(keystream_sha256, Vec::new())
    }

    fn k_output_hiding(keystream_sha256: Vec<u8>, hidden: Vec<ResponseRange>) -> SignedMessage {
        SignedMessage {
            body_type: BodyType::KOutput as i32,
            body: KOutput {
                response_keystream_sha256: keystream_sha256,
                response_ranges: hidden,
                ..Default::default()
            }
            .encode_to_vec(),
            signature: vec![0; 65],
        }
    }

    fn t_output(ciphertext_sha256: Vec<u8>) -> SignedMessage {
        SignedMessage {
            body_type: BodyType::TOutput as i32,
            body: TOutput {
                response_ciphertext_sha256: ciphertext_sha256,
                ..Default::default()
            }
            .encode_to_vec(),
            signature: vec![0; 65],
        }
    }

    #[test]
    fn outputs_over_other_bytes_are_caught_before_the_proof_is_handed_out() {
        let (keystream, ciphertext) = (b"revealed keystream", b"revealed ciphertext");
        let k = k_output(sha256(keystream).to_vec());
        let t = t_output(sha256(ciphertext).to_vec());
        let check = |k: Option<&SignedMessage>, t: Option<&SignedMessage>| {
            signed_digests_match(k, t, &[], keystream, ciphertext)
        };
        assert!(check(Some(&k), Some(&t)).is_ok());
        // What an older TEE_K signs: the whole keystream, zero at hidden positions.
        let older_k = k_output(sha256(b"revealed\0\0\0\0 keystream").to_vec());
        let err = check(Some(&older_k), Some(&t)).unwrap_err();
        assert!(err.to_string().contains("another keystream"), "{err}");
        // What an older TEE_T signs: the whole ciphertext.
        let older_t = t_output(sha256(b"revealed\x01\x02 ciphertext").to_vec());
        let err = check(Some(&k), Some(&older_t)).unwrap_err();
        assert!(err.to_string().contains("another ciphertext"), "{err}");
        let garbage = SignedMessage {
            body: vec![0xff; 3],
            ..k.clone()
        };
        assert!(check(Some(&garbage), Some(&t)).is_err());
        assert!(check(None, Some(&t)).is_err());
        assert!(check(Some(&k), None).is_err());
    }

    #[test]
    fn the_revealed_bytes_are_cut_outside_the_hidden_ranges() {
        let plaintext = b"HTTP/1.1 200 OK\r\n\r\nsecret=42; shown=7";
        let keystream: Vec<u8> = (0..plaintext.len() as u8)
            .map(|i| i.wrapping_mul(29) ^ 0xa5)
            .collect();
        let ciphertext: Vec<u8> = plaintext
            .iter()
            .zip(&keystream)
            .map(|(p, k)| p ^ k)
            .collect();
        let at = plaintext
            .windows(9)
            .position(|w| w == b"secret=42")
            .unwrap() as u64;
        let hidden = [ResponseRange {
            start: at,
            length: 9,
        }];
        let expected_k = crate::verify::revealed_bytes(&keystream, &hidden).unwrap();
        let expected_c = crate::verify::revealed_bytes(&ciphertext, &hidden).unwrap();
        assert_eq!(expected_c.len(), plaintext.len() - 9);
        let (k, t) = (
            k_output_hiding(sha256(&expected_k).to_vec(), hidden.to_vec()),
            t_output(sha256(&expected_c).to_vec()),
        );
        let pieces = [
            Bytes::copy_from_slice(&ciphertext[..5]),
            Bytes::new(),
            Bytes::copy_from_slice(&ciphertext[5..]),
        ];
        let got = revealed(plaintext, &pieces, &hidden).unwrap();
        assert!(signed_digests_match(Some(&k), Some(&t), &hidden, &got.1, &got.0).is_ok());
        // Outputs signed over other hidden ranges: caught too.
        let other = [ResponseRange {
            start: at + 1,
            length: 8,
        }];
        let err = signed_digests_match(Some(&k), Some(&t), &other, &got.1, &got.0).unwrap_err();
        assert!(err.to_string().contains("other hidden ranges"), "{err}");
        assert_eq!(got, (expected_c, expected_k));
        assert!(revealed(plaintext, &pieces[1..], &hidden).is_err());
    }
}
