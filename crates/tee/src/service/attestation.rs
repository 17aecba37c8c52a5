//! Attestation behind a trait: what binds a TEE's signer address and channel key to a measured enclave.
//!
//! `standalone` ([`Standalone`]) has no document: verifiers pin the two signer addresses themselves (never
//! an address carried in a bundle). A Nitro or GCP Confidential Space implementation returns its document,
//! which goes in `Bundle.attestations` with the role it attests; the verifier then checks the document and
//! the expected measurement (reference gap 10) before trusting the signer it names.

use crate::proto::{AttestationDocument, BodyType};
use crate::signing::Address;
use tessera_channel::PublicKey;

/// Produces the attestation document of one TEE.
pub trait Attestation: Send + Sync + 'static {
    /// The kind recorded in the bundle: `"standalone"`, `"nitro"`, `"gcp"`.
    fn kind(&self) -> &'static str;

    /// A document binding `signer` and `channel_key` to this enclave, or `None` when the mode has none.
    fn document(
        &self,
        role: BodyType,
        signer: Address,
        channel_key: PublicKey,
    ) -> Option<AttestationDocument>;
}

/// No enclave: signer addresses and channel keys are pinned by configuration on every side.
#[derive(Debug, Clone, Copy, Default)]
pub struct Standalone;

impl Attestation for Standalone {
    fn kind(&self) -> &'static str {
        "standalone"
    }

    fn document(&self, _: BodyType, _: Address, _: PublicKey) -> Option<AttestationDocument> {
        None
    }
}
