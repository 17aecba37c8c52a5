//! The split AEAD: TEE_K's half ([`TeeKKeys`] → [`Keystream`] + [`TagSecrets`]) and TEE_T's half
//! ([`tag`]: GHASH / Poly1305 from tag secrets, never the key).
//!
//! Composition, equal byte for byte to the one-shot AEADs (proved by the differential tests):
//!
//! - AES-GCM with a 96-bit nonce N: keystream = AES-CTR(K) over `N ‖ ctr32` from counter 2;
//!   tag secrets = `H ‖ E_K(J0)` with `H = E_K(0^128)`, `J0 = N ‖ 0^31 ‖ 1`;
//!   tag = `GHASH_H(AAD, C) XOR E_K(J0)`.
//! - ChaCha20-Poly1305: keystream = ChaCha20(K, N) from block 1; tag secrets = the first 32 bytes of block 0,
//!   the one-time Poly1305 key `r ‖ s`; tag = `Poly1305_{r,s}(AAD ‖ pad ‖ C ‖ pad ‖ le64(|AAD|) ‖ le64(|C|))`.

mod keystream;
pub mod tag;

pub use keystream::{Keystream, MAX_RECORD_KEYSTREAM, TAG_SECRETS_LEN, TagSecrets, TeeKKeys};
pub use tag::{Tag, compute_tag, verify_tag};
