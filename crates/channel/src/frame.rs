//! The wire codec, and nothing else: frames and the payloads inside them.
//!
//! Every WebSocket binary message is one frame: a kind byte followed by a Noise message.
//!
//! ```text
//! frame          = kind:u8 || noise_message
//! kind           = 0x01 client_hello | 0x02 server_hello | 0x03 client_auth | 0x04 transport
//! ```
//!
//! This module never touches keys or sockets, so the fuzz target in `fuzz/` exercises it alone
//! ([`decode`] and every `decode` of a payload must reject any input without panicking). The exact byte
//! layouts are specified in `docs/channel.md`.

use thiserror::Error;

/// A version of the channel protocol. The versions differ only in the Noise cipher; both are pattern XX,
/// X25519 and SHA-256, with the same messages and frames. The client chooses (its version is in client_hello
/// and in the prologue); a server speaks both.
///
/// SHA-256 rather than BLAKE2: every Noise implementation supports it (the Python `noiseprotocol` package,
/// Go's `flynn/noise`, the JavaScript ports), it is hardware-accelerated on current x86 and ARM CPUs, and the
/// handshake's cost is dominated by the four X25519 operations per side anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Suite {
    /// Version 1, `Noise_XX_25519_ChaChaPoly_SHA256`: fast on every CPU, and its key is 32 bytes (for servers
    /// holding many idle connections).
    #[default]
    ChaChaPoly,
    /// Version 2, `Noise_XX_25519_AESGCM_SHA256`: several times faster on bulk data where the CPU has AES
    /// and carry-less multiplication instructions (x86-64 AES-NI and PCLMULQDQ or VAES, ARMv8's crypto
    /// extensions), for channels that carry megabytes.
    AesGcm,
}

impl Suite {
    /// Every version this implementation speaks.
    pub const ALL: [Suite; 2] = [Suite::ChaChaPoly, Suite::AesGcm];

    /// The protocol version number carried in client_hello and in the prologue.
    pub const fn version(self) -> u16 {
        match self {
            Suite::ChaChaPoly => 1,
            Suite::AesGcm => 2,
        }
    }

    /// The suite of a protocol version number; `None` for versions this implementation does not speak.
    pub const fn from_version(version: u16) -> Option<Suite> {
        match version {
            1 => Some(Suite::ChaChaPoly),
            2 => Some(Suite::AesGcm),
            _ => None,
        }
    }

    /// The Noise protocol name.
    pub const fn noise_params(self) -> &'static str {
        match self {
            Suite::ChaChaPoly => "Noise_XX_25519_ChaChaPoly_SHA256",
            Suite::AesGcm => "Noise_XX_25519_AESGCM_SHA256",
        }
    }

    /// The Noise prologue: [`PROTOCOL_NAME`] followed by the version as a big-endian u16 (17 bytes).
    pub const fn prologue(self) -> &'static [u8; 17] {
        match self {
            Suite::ChaChaPoly => &PROLOGUE_V1,
            Suite::AesGcm => &PROLOGUE_V2,
        }
    }
}

const PROLOGUE_V1: [u8; 17] = prologue(1);
const PROLOGUE_V2: [u8; 17] = prologue(2);

const fn prologue(version: u16) -> [u8; 17] {
    let mut out = [0u8; 17];
    let mut i = 0;
    while i < PROTOCOL_NAME.len() {
        out[i] = PROTOCOL_NAME[i];
        i += 1;
    }
    let v = version.to_be_bytes();
    out[15] = v[0];
    out[16] = v[1];
    out
}

/// The protocol name, the first part of the Noise prologue.
pub const PROTOCOL_NAME: &[u8; 15] = b"tessera-channel";

/// Largest Noise message (the Noise specification's limit).
pub const MAX_NOISE_MESSAGE: usize = 65_535;
/// Largest frame: the kind byte plus the largest Noise message.
pub const MAX_FRAME: usize = 1 + MAX_NOISE_MESSAGE;
/// Length of a Noise authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of an X25519 public key.
pub const KEY_LEN: usize = 32;
/// Length of the client and server nonces.
pub const NONCE_LEN: usize = 32;

/// Length of a client_hello Noise message: `e` (32) and the cleartext payload (version 2 + nonce 32).
pub const CLIENT_HELLO_LEN: usize = KEY_LEN + ClientHello::LEN;
/// Length of a server_hello Noise message: `e` (32), encrypted `s` (32 + 16), encrypted payload (32 + 16).
pub const SERVER_HELLO_LEN: usize = KEY_LEN + KEY_LEN + TAG_LEN + NONCE_LEN + TAG_LEN;
/// Shortest client_auth Noise message: encrypted `s` (32 + 16) and an encrypted empty payload (16).
pub const CLIENT_AUTH_MIN_LEN: usize = KEY_LEN + TAG_LEN + TAG_LEN;
/// Largest application auth payload in client_auth (what fits in one Noise message).
pub const MAX_AUTH_PAYLOAD: usize = MAX_NOISE_MESSAGE - CLIENT_AUTH_MIN_LEN;
/// Shortest transport Noise message: the plaintext type byte and the tag.
pub const TRANSPORT_MIN_LEN: usize = 1 + TAG_LEN;
/// Largest plaintext of one transport message, type byte included.
pub const MAX_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG_LEN;
/// Largest body (application bytes) of one transport message.
pub const MAX_FRAGMENT: usize = MAX_PLAINTEXT - 1;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Handshake message 1, client to server: `-> e` with the [`ClientHello`] payload.
    ClientHello = 0x01,
    /// Handshake message 2, server to client: `<- e, ee, s, es` with the [`ServerHello`] payload.
    ServerHello = 0x02,
    /// Handshake message 3, client to server: `-> s, se` with the application auth payload.
    ClientAuth = 0x03,
    /// A Noise transport message (session_established, then data), either direction.
    Transport = 0x04,
}

impl FrameKind {
    /// The message name used in the seed, the docs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::ClientHello => "client_hello",
            FrameKind::ServerHello => "server_hello",
            FrameKind::ClientAuth => "client_auth",
            FrameKind::Transport => "transport",
        }
    }
}

impl std::fmt::Display for FrameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes are not a valid frame or payload.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The frame has no bytes at all.
    #[error("empty frame")]
    Empty,
    /// The kind byte is not one of the four kinds.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The frame is longer than any frame may be.
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME}")]
    TooLong {
        /// The frame's length.
        len: usize,
    },
    /// The Noise message's length is impossible for this kind.
    #[error("{kind} of {len} bytes has the wrong length")]
    BadLength {
        /// The frame's kind.
        kind: FrameKind,
        /// The length of its Noise message.
        len: usize,
    },
    /// A decrypted payload does not have the documented layout.
    #[error("malformed {0} payload")]
    BadPayload(&'static str),
    /// A transport plaintext has an unknown type byte.
    #[error("unknown transport message type 0x{0:02x}")]
    UnknownType(u8),
}

/// A decoded frame, borrowing its Noise message from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What the frame carries.
    pub kind: FrameKind,
    /// The Noise message.
    pub noise: &'a [u8],
}

/// Decodes one frame, checking the kind byte and the length bounds of its kind.
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (&first, noise) = bytes.split_first().ok_or(FrameError::Empty)?;
    if bytes.len() > MAX_FRAME {
        return Err(FrameError::TooLong { len: bytes.len() });
    }
    let kind = match first {
        0x01 => FrameKind::ClientHello,
        0x02 => FrameKind::ServerHello,
        0x03 => FrameKind::ClientAuth,
        0x04 => FrameKind::Transport,
        other => return Err(FrameError::UnknownKind(other)),
    };
    let len = noise.len();
    let ok = match kind {
        FrameKind::ClientHello => len == CLIENT_HELLO_LEN,
        FrameKind::ServerHello => len == SERVER_HELLO_LEN,
        FrameKind::ClientAuth => len >= CLIENT_AUTH_MIN_LEN,
        FrameKind::Transport => len >= TRANSPORT_MIN_LEN,
    };
    if !ok {
        return Err(FrameError::BadLength { kind, len });
    }
    Ok(Frame { kind, noise })
}

/// Builds a frame: the kind byte followed by the Noise message.
pub fn encode(kind: FrameKind, noise: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + noise.len());
    out.push(kind as u8);
    out.extend_from_slice(noise);
    out
}

/// The cleartext payload of client_hello: the protocol version and the client nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    /// The protocol version the client speaks (big-endian u16 on the wire).
    pub version: u16,
    /// 32 random bytes from the client.
    pub nonce: [u8; NONCE_LEN],
}

impl ClientHello {
    /// Encoded length: 2 + 32.
    pub const LEN: usize = 2 + NONCE_LEN;

    /// `version:u16be || nonce[32]`.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..2].copy_from_slice(&self.version.to_be_bytes());
        out[2..].copy_from_slice(&self.nonce);
        out
    }

    /// The version a client_hello Noise message claims, read before any Noise processing: the message is
    /// `e` (32 bytes) followed by the payload in clear, and the version picks the Noise protocol the server
    /// must build to read it.
    pub fn peek_version(noise_message: &[u8]) -> Result<u16, FrameError> {
        match noise_message.get(KEY_LEN..KEY_LEN + 2) {
            Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(FrameError::BadPayload("client_hello")),
        }
    }

    /// Decodes exactly [`ClientHello::LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        if bytes.len() != Self::LEN {
            return Err(FrameError::BadPayload("client_hello"));
        }
        let (version, nonce) = bytes.split_at(2);
        Ok(ClientHello {
            version: u16::from_be_bytes([version[0], version[1]]),
            nonce: nonce
                .try_into()
                .map_err(|_| FrameError::BadPayload("client_hello"))?,
        })
    }
}

/// The (encrypted) payload of server_hello: the server nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHello {
    /// 32 random bytes from the server.
    pub nonce: [u8; NONCE_LEN],
}

impl ServerHello {
    /// Decodes exactly 32 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        Ok(ServerHello {
            nonce: bytes
                .try_into()
                .map_err(|_| FrameError::BadPayload("server_hello"))?,
        })
    }
}

/// Type byte of a transport plaintext: session_established.
pub const TYPE_SESSION_ESTABLISHED: u8 = 0x01;
/// Type byte of a transport plaintext: the last (or only) fragment of an application message.
pub const TYPE_DATA: u8 = 0x02;
/// Type byte of a transport plaintext: a fragment with more fragments of the same message to follow.
pub const TYPE_DATA_MORE: u8 = 0x03;

/// A decrypted transport plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plaintext<'a> {
    /// The server's first transport message.
    SessionEstablished(SessionEstablished<'a>),
    /// A fragment of an application message; `last` is false while more fragments follow.
    Data {
        /// True for the final fragment.
        last: bool,
        /// The fragment's bytes.
        body: &'a [u8],
    },
}

impl<'a> Plaintext<'a> {
    /// Decodes a transport plaintext: `type:u8 || body`.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, FrameError> {
        let (&ty, body) = bytes
            .split_first()
            .ok_or(FrameError::BadPayload("transport"))?;
        match ty {
            TYPE_SESSION_ESTABLISHED => {
                SessionEstablished::decode(body).map(Plaintext::SessionEstablished)
            }
            TYPE_DATA => Ok(Plaintext::Data { last: true, body }),
            TYPE_DATA_MORE => Ok(Plaintext::Data { last: false, body }),
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

/// The body of session_established: session id, expiry and the application's welcome payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEstablished<'a> {
    /// The server's session id (16 bytes).
    pub session_id: [u8; 16],
    /// When the server will end the session, in seconds since the Unix epoch; 0 for no fixed expiry.
    pub expires_at: u64,
    /// The application payload.
    pub payload: &'a [u8],
}

impl<'a> SessionEstablished<'a> {
    /// Fixed part: 16 + 8 bytes.
    pub const FIXED_LEN: usize = 16 + 8;

    /// The full plaintext: `0x01 || session_id[16] || expires_at:u64be || payload`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + Self::FIXED_LEN + self.payload.len());
        out.push(TYPE_SESSION_ESTABLISHED);
        out.extend_from_slice(&self.session_id);
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(self.payload);
        out
    }

    /// Decodes the body after the type byte.
    pub fn decode(body: &'a [u8]) -> Result<Self, FrameError> {
        let bad = || FrameError::BadPayload("session_established");
        if body.len() < Self::FIXED_LEN {
            return Err(bad());
        }
        let (id, rest) = body.split_at(16);
        let (expiry, payload) = rest.split_at(8);
        Ok(SessionEstablished {
            session_id: id.try_into().map_err(|_| bad())?,
            expires_at: u64::from_be_bytes(expiry.try_into().map_err(|_| bad())?),
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prologue_bytes_are_name_then_version() {
        let v1 = Suite::ChaChaPoly.prologue();
        assert_eq!(&v1[..15], b"tessera-channel");
        assert_eq!(hex::encode(v1), "746573736572612d6368616e6e656c0001");
        assert_eq!(
            hex::encode(Suite::AesGcm.prologue()),
            "746573736572612d6368616e6e656c0002"
        );
    }

    #[test]
    fn versions_name_their_suites() {
        for suite in Suite::ALL {
            assert_eq!(Suite::from_version(suite.version()), Some(suite));
            assert!(
                suite
                    .noise_params()
                    .parse::<snow::params::NoiseParams>()
                    .is_ok()
            );
        }
        assert_eq!(Suite::from_version(0), None);
        assert_eq!(Suite::from_version(3), None);
        let hello = ClientHello {
            version: 2,
            nonce: [7; NONCE_LEN],
        };
        let message = [[1u8; KEY_LEN].as_slice(), &hello.encode()].concat();
        assert_eq!(ClientHello::peek_version(&message), Ok(2));
        assert!(ClientHello::peek_version(&message[..KEY_LEN + 1]).is_err());
    }

    #[test]
    fn lengths_match_the_noise_pattern() {
        assert_eq!(CLIENT_HELLO_LEN, 66);
        assert_eq!(SERVER_HELLO_LEN, 128);
        assert_eq!(CLIENT_AUTH_MIN_LEN, 64);
        assert_eq!(MAX_FRAGMENT, 65_518);
    }

    #[test]
    fn frames_round_trip_and_reject_bad_lengths() {
        let hello = encode(FrameKind::ClientHello, &[7u8; CLIENT_HELLO_LEN]);
        let frame = decode(&hello).expect("valid");
        assert_eq!(frame.kind, FrameKind::ClientHello);
        assert_eq!(frame.noise.len(), CLIENT_HELLO_LEN);
        assert_eq!(decode(&[]), Err(FrameError::Empty));
        assert_eq!(decode(&[9, 0]), Err(FrameError::UnknownKind(9)));
        assert!(matches!(
            decode(&encode(FrameKind::ServerHello, &[0; 10])),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            decode(&vec![4u8; MAX_FRAME + 1]),
            Err(FrameError::TooLong { .. })
        ));
        assert!(decode(&encode(FrameKind::Transport, &[0; 16])).is_err());
    }

    #[test]
    fn payloads_round_trip() {
        let hello = ClientHello {
            version: 1,
            nonce: [3; 32],
        };
        assert_eq!(ClientHello::decode(&hello.encode()), Ok(hello));
        let est = SessionEstablished {
            session_id: [5; 16],
            expires_at: 1_900_000_000,
            payload: b"welcome",
        };
        let bytes = est.encode();
        assert_eq!(
            Plaintext::decode(&bytes),
            Ok(Plaintext::SessionEstablished(est))
        );
        assert_eq!(
            Plaintext::decode(&[TYPE_DATA_MORE, 1, 2]),
            Ok(Plaintext::Data {
                last: false,
                body: &[1, 2]
            })
        );
        assert_eq!(
            Plaintext::decode(&[0x7f]),
            Err(FrameError::UnknownType(0x7f))
        );
        assert!(Plaintext::decode(&[]).is_err());
        assert!(SessionEstablished::decode(&[0; 23]).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
            let _ = ClientHello::decode(&bytes);
            let _ = ServerHello::decode(&bytes);
            let _ = Plaintext::decode(&bytes);
        }
    }
}
