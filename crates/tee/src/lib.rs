//! Attested HTTPS transcripts: TLS over relayed bytes and split AEAD (work in progress: see issue 5).
