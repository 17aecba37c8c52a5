//! Input from the network or a file never panics: random bytes through the splitter, the record layer, the
//! content parser, the certificate parser and the root-store loader end in `Ok` or an error.

use proptest::prelude::*;
use tessera_tee::record::{ContentType, Record, RecordSplitter};
use tessera_tee::{
    CertificateInfo, CipherSuite, RootStore, TeeKReader, TlsVersion, open_via_split,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_streams_through_splitter_and_record_layer(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..6),
        suite_index in 0usize..9,
        seq: u64,
    ) {
        let suite = CipherSuite::ALL[suite_index];
        let mut reader = TeeKReader::new(suite, &vec![1; suite.aead().key_len()], &[2; 12], seq).unwrap();
        let mut splitter = RecordSplitter::new(suite.version().max_ciphertext());
        for chunk in &chunks {
            match splitter.push(chunk) {
                Ok(records) => {
                    for record in records {
                        // Random bytes never authenticate.
                        prop_assert!(open_via_split(&mut reader, &record).is_err());
                    }
                }
                Err(_) => break,
            }
        }
    }

    #[test]
    fn random_payloads_of_every_type(payload in proptest::collection::vec(any::<u8>(), 0..100), ty in 20u8..25, suite_index in 0usize..9) {
        let suite = CipherSuite::ALL[suite_index];
        let mut reader = TeeKReader::new(suite, &vec![1; suite.aead().key_len()], &[2; 12], 0).unwrap();
        let record = Record::new(ContentType::try_from(ty).unwrap(), payload.clone()).unwrap();
        prop_assert!(open_via_split(&mut reader, &record).is_err());
        for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
            let _ = tessera_tee::content::parse_content(version, ContentType::try_from(ty).unwrap(), payload.clone());
        }
    }

    #[test]
    fn random_der_and_pem(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        prop_assert!(CertificateInfo::from_der(&bytes).is_err());
        let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        pem.extend(&bytes);
        let _ = RootStore::from_pem(&pem);
        let _ = RootStore::from_pem(&bytes);
    }
}

#[test]
fn root_store_files() {
    let missing = std::path::Path::new("/nonexistent/tessera/roots.pem");
    assert!(RootStore::from_pem_file(missing).is_err());
    assert!(RootStore::webpki().len() > 100);
    let dir = std::env::temp_dir().join(format!("tessera-tee-roots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, b"no certificates here\n").unwrap();
    assert!(RootStore::from_pem_file(&empty).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
