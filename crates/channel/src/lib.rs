//! A mutually authenticated, encrypted WebSocket channel on Noise XX (work in progress: see issue 4).
