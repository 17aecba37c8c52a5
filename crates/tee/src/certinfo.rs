//! Certificate information TEE_K reports about the server: subject and issuer common names, validity and DNS
//! names. Parsed with x509-parser; chain and hostname validation happen in rustls before this runs.

use crate::error::{Result, TeeError};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Facts about one certificate of the server's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject's common name, if any.
    pub subject_cn: Option<String>,
    /// The issuer's common name, if any.
    pub issuer_cn: Option<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// The DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
}

impl CertificateInfo {
    /// Parses a DER certificate. Any malformed input is an error, never a panic.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| TeeError::Certificate(format!("not a valid X.509 certificate: {e}")))?;
        let cn = |name: &x509_parser::x509::X509Name<'_>| {
            name.iter_common_name()
                .next()
                .and_then(|a| a.as_str().ok())
                .map(str::to_owned)
        };
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(name) => Some((*name).to_owned()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                return Err(TeeError::Certificate(format!(
                    "bad subject alternative name: {e}"
                )));
            }
        };
        Ok(CertificateInfo {
            subject_cn: cn(cert.subject()),
            issuer_cn: cn(cert.issuer()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            dns_names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_validity_from_an_rcgen_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["example.test".into(), "www.example.test".into()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Example Leaf");
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(2027, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = CertificateInfo::from_der(cert.der()).unwrap();
        assert_eq!(info.subject_cn.as_deref(), Some("Example Leaf"));
        assert_eq!(info.issuer_cn.as_deref(), Some("Example Leaf"));
        assert_eq!(info.dns_names, ["example.test", "www.example.test"]);
        assert_eq!(info.not_before, 1_767_312_000);
        assert!(info.not_after > info.not_before);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(CertificateInfo::from_der(b"\x30\x03abc").is_err());
        assert!(CertificateInfo::from_der(&[]).is_err());
    }
}
