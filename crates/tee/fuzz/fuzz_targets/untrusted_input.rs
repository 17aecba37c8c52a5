//! Everything else the TEE code reads from a peer, a website or a file, on arbitrary bytes: the record
//! splitter (the same records whatever the TCP cuts), record content parsing, certificate parsing, the
//! redaction checks, the verifier on a bundle's bytes and the proof file. None may panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tessera_tee::proto::{RedactedRequest, RedactionStreams, RequestRange};
use tessera_tee::signing::{Address, Signer};
use tessera_tee::verify::{VerifierConfig, verify_bundle, verify_bundle_bytes};
use tessera_tee::{
    CertificateInfo, ContentType, RecordSplitter, TlsVersion, content, proof_file, redaction,
};

static SIGNERS: LazyLock<(Address, Address)> =
    LazyLock::new(|| (Signer::generate().address(), Signer::generate().address()));

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => splitter(rest),
        1 => {
            for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
                for ty in [
                    ContentType::ApplicationData,
                    ContentType::Handshake,
                    ContentType::Alert,
                ] {
                    let _ = content::parse_content(version, ty, rest.to_vec());
                }
            }
        }
        2 => {
            let _ = CertificateInfo::from_der(rest);
        }
        3 => {
            let config = VerifierConfig::new(SIGNERS.0, SIGNERS.1);
            assert!(
                verify_bundle_bytes(rest, &config).is_err(),
                "an unsigned bundle never verifies"
            );
            if let Ok(bundle) = proof_file::from_json(rest) {
                assert!(verify_bundle(&bundle, &config).is_err());
            }
        }
        4 => {
            if let Ok(request) = RedactedRequest::decode(rest) {
                let _ = redaction::validate_redacted_request(&request, "example.com", 443);
                let _ = redaction::validate_redacted_request(&request, "example.com", 8443);
            }
        }
        _ => streams(rest),
    }
});

/// Records from one push equal records from the same bytes cut in two.
fn splitter(data: &[u8]) {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = RecordSplitter::any_version().push(bytes);
    let cut = (cut as usize).min(bytes.len());
    let mut split = RecordSplitter::any_version();
    let first = split.push(&bytes[..cut]);
    let pieces = first.and_then(|mut records| {
        records.extend(split.push(&bytes[cut..])?);
        Ok(records)
    });
    if let (Ok(whole), Ok(pieces)) = (whole, pieces) {
        assert_eq!(whole, pieces);
    }
}

/// TEE_T's stream check on arbitrary ranges, commitments, streams and masked bytes.
fn streams(data: &[u8]) {
    let Ok(request) = RedactedRequest::decode(data) else {
        return;
    };
    let ranges: Vec<RequestRange> = request.ranges;
    let streams = RedactionStreams {
        streams: request.commitments.clone(),
        commitment_keys: request.commitments.clone(),
    };
    let masked = request.commitments.clone();
    let _ = redaction::check_ranges(&ranges, request.redacted.len());
    let _ = redaction::check_streams(&ranges, &request.commitments, &streams, &masked);
}
