//! Session identifiers: 128 random bits from the operating system's CSPRNG (through `rand`'s thread RNG,
//! which is seeded from it), so an id can be handed to a client and never guessed by another one.

use std::fmt;
use std::str::FromStr;

/// An unguessable 128-bit session identifier, rendered as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u128);

impl SessionId {
    /// A fresh random id.
    pub fn random() -> Self {
        SessionId(rand::random::<u128>())
    }

    /// The raw 128 bits, e.g. to embed in a binary wire format.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// Big-endian bytes of the id.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Rebuilds an id from its big-endian bytes (as produced by [`SessionId::to_bytes`]).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        SessionId(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// The text given to [`SessionId::from_str`] was not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a session id is 32 hex digits")]
pub struct ParseSessionIdError;

impl FromStr for SessionId {
    type Err = ParseSessionIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseSessionIdError);
        }
        u128::from_str_radix(s, 16)
            .map(SessionId)
            .map_err(|_| ParseSessionIdError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text_and_bytes() {
        let id = SessionId::random();
        assert_eq!(id.to_string().parse::<SessionId>(), Ok(id));
        assert_eq!(SessionId::from_bytes(id.to_bytes()), id);
        assert_eq!(id.to_string().len(), 32);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "xyz",
            "+0000000000000000000000000000000",
            &"0".repeat(33),
        ] {
            assert_eq!(
                bad.parse::<SessionId>(),
                Err(ParseSessionIdError),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ids_differ() {
        let a = SessionId::random();
        let b = SessionId::random();
        assert_ne!(a, b);
    }
}
