//! What the bundle carries of the keystream: the revealed bytes only, checked against K_OUTPUT's digest.

use super::ClientError;
use crate::proto::{ResponseRange, SignedMessage};

/// The keystream of the revealed bytes — plaintext XOR ciphertext there, the hidden ranges cut out — once
/// K_OUTPUT is seen to have signed exactly these bytes: a TEE_K of another protocol version would otherwise
/// make a proof no verifier accepts, found out only by the verifier.
pub(super) fn revealed_keystream(
    plaintext: &[u8],
    ciphertext: &[u8],
    hidden: &[ResponseRange],
    k_output: Option<&SignedMessage>,
) -> Result<Vec<u8>, ClientError> {
    if plaintext.len() != ciphertext.len() {
        return Err(ClientError::Protocol(
            "the response and its ciphertext differ in length".into(),
        ));
    }
    let cut = |bytes: &[u8]| {
        crate::verify::revealed_bytes(bytes, hidden)
            .map_err(|e| ClientError::Protocol(format!("hidden ranges: {e}")))
    };
    let mut revealed = cut(plaintext)?;
    for (k, c) in revealed.iter_mut().zip(cut(ciphertext)?) {
        *k ^= c;
    }
    signed_digest_matches(k_output, &revealed)?;
    Ok(revealed)
}

/// Checks that K_OUTPUT signed the SHA-256 of `keystream`, the revealed keystream the bundle carries. (The
/// ciphertext's digest, which TEE_T made from the records as the client relayed them, is not hashed again
/// here: a megabyte of SHA-256 per proof for a check the verifier makes anyway.)
fn signed_digest_matches(
    k_output: Option<&SignedMessage>,
    keystream: &[u8],
) -> Result<(), ClientError> {
    use prost::Message as _;
    let bad = |what: &str| ClientError::Protocol(format!("{what} (a TEE_K of another version?)"));
    let k = k_output
        .and_then(|m| crate::proto::KOutput::decode(m.body.as_slice()).ok())
        .ok_or_else(|| bad("K_OUTPUT does not decode"))?;
    if k.response_keystream_sha256 != crate::signing::sha256(keystream) {
        return Err(bad("TEE_K signed another keystream than the revealed one"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::BodyType;
    use prost::Message as _;

    fn k_output(keystream_sha256: Vec<u8>) -> SignedMessage {
        SignedMessage {
            body_type: BodyType::KOutput as i32,
            body: crate::proto::KOutput {
                response_keystream_sha256: keystream_sha256,
                ..Default::default()
            }
            .encode_to_vec(),
            signature: vec![0; 65],
        }
    }

    #[test]
    fn a_k_output_over_another_keystream_is_caught_before_the_proof_is_handed_out() {
        let revealed = b"revealed keystream bytes";
        let signed = k_output(crate::signing::sha256(revealed).to_vec());
        assert!(signed_digest_matches(Some(&signed), revealed).is_ok());
        // What an older TEE_K signs: the whole keystream, zero at hidden positions.
        let older = k_output(crate::signing::sha256(b"revealed\0\0\0\0 keystream bytes").to_vec());
        let err = signed_digest_matches(Some(&older), revealed).unwrap_err();
        assert!(err.to_string().contains("another keystream"), "{err}");
        let garbage = SignedMessage {
            body: vec![0xff; 3],
            ..signed
        };
        assert!(signed_digest_matches(Some(&garbage), revealed).is_err());
        assert!(signed_digest_matches(None, revealed).is_err());
    }

    #[test]
    fn the_revealed_keystream_is_plaintext_xor_ciphertext_outside_the_hidden_ranges() {
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
        let expected = crate::verify::revealed_bytes(&keystream, &hidden).unwrap();
        let signed = k_output(crate::signing::sha256(&expected).to_vec());
        let got = revealed_keystream(plaintext, &ciphertext, &hidden, Some(&signed)).unwrap();
        assert_eq!(got, expected);
        assert!(revealed_keystream(plaintext, &ciphertext[1..], &hidden, Some(&signed)).is_err());
    }
}
