//! What the bundle carries of the keystream: the revealed bytes only, checked against K_OUTPUT's digest.

use super::ClientError;
use crate::proto::{ResponseRange, SignedMessage};
use tessera_session::SecretBytes;

/// The keystream of the revealed bytes (the hidden ranges cut out of `keystream`, which is zeroized when
/// dropped here), once K_OUTPUT is seen to have signed exactly these bytes: a TEE_K of another protocol
/// version would otherwise make a proof no verifier accepts, found out only by the verifier.
pub(super) fn revealed_keystream(
    keystream: SecretBytes,
    hidden: &[ResponseRange],
    k_output: Option<&SignedMessage>,
) -> Result<Vec<u8>, ClientError> {
    let revealed = crate::verify::revealed_bytes(keystream.expose_secret(), hidden)
        .map_err(|e| ClientError::Protocol(format!("hidden ranges: {e}")))?;
    drop(keystream);
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
}
