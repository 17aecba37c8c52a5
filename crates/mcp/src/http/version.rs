//! The `MCP-Protocol-Version` header, per revision: absent means 2025-03-26 (the last revision without it),
//! a known revision is used as is, a well-formed date later than every known revision is an unknown future
//! version and passes through to the upstream (which negotiates), anything else is invalid (HTTP 400).

/// Every revision this proxy knows, oldest first.
pub const KNOWN: [&str; 5] = [
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];

/// The revision assumed when the header is absent.
pub const DEFAULT_WITHOUT_HEADER: &str = "2025-03-26";

/// The first stateless revision.
pub const STATELESS: &str = "2026-07-28";

/// What the header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderVersion {
    /// No header: 2025-03-26.
    Absent,
    /// A revision the proxy knows.
    Known(&'static str),
    /// A well-formed version newer than any the proxy knows: passed through.
    Future(String),
}

impl HeaderVersion {
    /// The version in force.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderVersion::Absent => DEFAULT_WITHOUT_HEADER,
            HeaderVersion::Known(v) => v,
            HeaderVersion::Future(v) => v,
        }
    }

    /// True for 2026-07-28 and later (no sessions, `_meta` on every request).
    pub fn is_stateless(&self) -> bool {
        self.as_str() >= STATELESS
    }
}

/// The header's value is not a usable protocol version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid or unsupported MCP-Protocol-Version {0:?}")]
pub struct InvalidVersion(pub String);

fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// Reads the header value (`None` when absent).
pub fn parse(value: Option<&[u8]>) -> Result<HeaderVersion, InvalidVersion> {
    let Some(raw) = value else {
        return Ok(HeaderVersion::Absent);
    };
    let text = std::str::from_utf8(raw)
        .map_err(|_| InvalidVersion(String::from_utf8_lossy(raw).into_owned()))?;
    let text = text.trim();
    if let Some(known) = KNOWN.iter().find(|k| **k == text) {
        return Ok(HeaderVersion::Known(known));
    }
    if is_date(text) && KNOWN.iter().all(|k| *k < text) {
        return Ok(HeaderVersion::Future(text.to_owned()));
    }
    Err(InvalidVersion(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_revision_rules() {
        assert_eq!(parse(None).unwrap().as_str(), "2025-03-26");
        assert_eq!(
            parse(Some(b"2025-06-18")).unwrap(),
            HeaderVersion::Known("2025-06-18")
        );
        assert!(parse(Some(b"2026-07-28")).unwrap().is_stateless());
        assert!(!parse(Some(b"2025-11-25")).unwrap().is_stateless());
        let future = parse(Some(b"2027-01-01")).unwrap();
        assert_eq!(future, HeaderVersion::Future("2027-01-01".into()));
        assert!(future.is_stateless());
        for bad in [
            &b"banana"[..],
            b"2025-01-01",
            b"2025-11-5",
            b"",
            b"\xff\xfe",
            b"2025-11-25x",
        ] {
            assert!(parse(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
