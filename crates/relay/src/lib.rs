//! End-to-end encrypted messaging relay (work in progress: see issue 7).
