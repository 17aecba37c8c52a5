//! The services' own metrics (beside the session registries' `tessera_sessions_*`, labelled `tee-k`,
//! `tee-t`, which count sessions and why they ended). Handles are registered once per service.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tessera_tee_proofs_signed_total` | counter | service |
//! | `tessera_tee_proof_seconds` | histogram | service (signed proofs: session start to signed output) |
//! | `tessera_tee_response_bytes_total` | counter | service (ciphertext bytes of signed proofs) |

use metrics::{Counter, Histogram, counter, histogram};
use std::time::Duration;

/// One service's handles.
pub(crate) struct ServiceMetrics {
    signed: Counter,
    seconds: Histogram,
    bytes: Counter,
}

impl ServiceMetrics {
    pub(crate) fn new(service: &'static str) -> Self {
        let s = [("service", service)];
        ServiceMetrics {
            signed: counter!("tessera_tee_proofs_signed_total", &s),
            seconds: histogram!("tessera_tee_proof_seconds", &s),
            bytes: counter!("tessera_tee_response_bytes_total", &s),
        }
    }

    /// A session signed its output after `took`, over `bytes` of response ciphertext.
    pub(crate) fn signed(&self, took: Duration, bytes: usize) {
        self.signed.increment(1);
        self.seconds.record(took.as_secs_f64());
        self.bytes.increment(bytes as u64);
    }
}
