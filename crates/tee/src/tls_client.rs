//! The TLS client TEE_K runs over bytes someone else carries: rustls 0.23 driven through `read_tls` /
//! `write_tls` with no socket inside, and secret extraction once the handshake is done.
//!
//! Flow: [`RelayedTlsClient::new`] → loop { [`RelayedTlsClient::take_outgoing`] to the relay;
//! [`RelayedTlsClient::feed`] with whatever the relay read } until [`RelayedTlsClient::is_handshake_complete`],
//! a last `take_outgoing` (the client Finished), then [`RelayedTlsClient::finish`] gives an
//! [`EstablishedSession`]: the TEE_K halves of the split record layer and the server's certificate info.
//!
//! Records are handed to rustls one whole record at a time and never after the handshake completes, so
//! post-handshake records (TLS 1.3 NewSessionTickets, alerts) are left for the split record layer, and the
//! sequence numbers rustls reports at extraction are exact.

use crate::certinfo::CertificateInfo;
use crate::error::{Result, TeeError};
use crate::key_update::TrafficSecret;
use crate::record::{Record, RecordSplitter};
use crate::record_layer::{TeeKReader, TeeKWriter};
use crate::suite::{AeadAlgorithm, CipherSuite, TlsVersion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ConnectionTrafficSecrets, RootCertStore};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tessera_session::SecretBytes;

/// Records [`RelayedTlsClient::feed`] keeps for the split layer between handshake completion and
/// [`RelayedTlsClient::finish`] (tickets and the first response records); more is an error, so memory stays bounded.
pub const MAX_RECORDS_BEFORE_FINISH: usize = 64;

/// Largest PEM root file accepted (the Mozilla bundle is about 200 KiB).
pub const MAX_ROOT_FILE: u64 = 16 * 1024 * 1024;

/// The trust anchors server certificates are validated against.
#[derive(Clone, Debug)]
pub struct RootStore(Arc<RootCertStore>);

impl Default for RootStore {
    fn default() -> Self {
        Self::webpki()
    }
}

impl RootStore {
    /// The Mozilla roots shipped by webpki-roots (the default).
    pub fn webpki() -> Self {
        RootStore(Arc::new(RootCertStore::from_iter(
            webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
        )))
    }

    /// Roots from PEM text (one or more `CERTIFICATE` blocks); fails if none is usable.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| TeeError::RootStore(format!("bad PEM: {e}")))?;
            store
                .add(cert)
                .map_err(|e| TeeError::RootStore(format!("unusable root certificate: {e}")))?;
        }
        if store.is_empty() {
            return Err(TeeError::RootStore(
                "no certificate in the PEM input".into(),
            ));
        }
        Ok(RootStore(Arc::new(store)))
    }

    /// Roots from a PEM file of at most [`MAX_ROOT_FILE`] bytes.
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        use std::io::Read;
        let file = std::fs::File::open(path)?;
        let mut pem = Vec::new();
        file.take(MAX_ROOT_FILE + 1).read_to_end(&mut pem)?;
        if pem.len() as u64 > MAX_ROOT_FILE {
            return Err(TeeError::RootStore(format!(
                "{} is larger than {MAX_ROOT_FILE} bytes",
                path.display()
            )));
        }
        Self::from_pem(&pem)
    }

    /// Number of trust anchors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the client asks TEE_K to connect to (`request_connection` in the protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The server's DNS name (or IP address); certificates are validated against it.
    pub hostname: String,
    /// Send the SNI extension (ignored for IP addresses, which never carry SNI).
    pub sni: bool,
    /// ALPN protocols to offer; `["http/1.1"]` by default.
    pub alpn: Vec<Vec<u8>>,
    /// Offer only this protocol version.
    pub force_version: Option<TlsVersion>,
    /// Offer only this cipher suite.
    pub force_suite: Option<CipherSuite>,
}

impl ConnectRequest {
    /// A request for `hostname` with SNI, ALPN http/1.1, both versions and all nine suites.
    pub fn new(hostname: impl Into<String>) -> Self {
        ConnectRequest {
            hostname: hostname.into(),
            sni: true,
            alpn: vec![b"http/1.1".to_vec()],
            force_version: None,
            force_suite: None,
        }
    }

    /// Forces a protocol version.
    pub fn with_version(mut self, version: TlsVersion) -> Self {
        self.force_version = Some(version);
        self
    }

    /// Forces a cipher suite (and so its version).
    pub fn with_suite(mut self, suite: CipherSuite) -> Self {
        self.force_suite = Some(suite);
        self
    }

    fn client_config(&self, roots: &RootStore) -> Result<ClientConfig> {
        if let (Some(v), Some(s)) = (self.force_version, self.force_suite)
            && s.version() != v
        {
            return Err(TeeError::InvalidRequest(format!(
                "forced suite {s} is not a {v:?} suite"
            )));
        }
        let suites: Vec<_> = CipherSuite::ALL
            .into_iter()
            .filter(|s| self.force_suite.is_none_or(|f| f == *s))
            .filter(|s| self.force_version.is_none_or(|v| v == s.version()))
            .map(CipherSuite::rustls)
            .collect();
        let versions: Vec<_> = [TlsVersion::Tls13, TlsVersion::Tls12]
            .into_iter()
            .filter(|v| self.force_version.is_none_or(|f| f == *v))
            .filter(|v| self.force_suite.is_none_or(|s| s.version() == *v))
            .map(TlsVersion::rustls)
            .collect();
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: suites,
            ..rustls::crypto::ring::default_provider()
        };
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&versions)?
            .with_root_certificates(roots.0.clone())
            .with_no_client_auth();
        config.enable_secret_extraction = true;
        config.enable_sni = self.sni;
        config.alpn_protocols = self.alpn.clone();
        // One request per session: no tickets kept, so every handshake shows the certificate chain.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }
}

/// Captures the two TLS 1.3 application traffic secrets from rustls's key log (and nothing else), so the
/// record layer can follow KeyUpdates. Lives inside TEE_K only; never printed.
#[derive(Default)]
struct TrafficSecretLog(Mutex<[Option<SecretBytes>; 2]>);

const CLIENT_TRAFFIC_SECRET_0: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_TRAFFIC_SECRET_0: &str = "SERVER_TRAFFIC_SECRET_0";

impl TrafficSecretLog {
    fn take(&self) -> [Option<SecretBytes>; 2] {
        let mut slots = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        [slots[0].take(), slots[1].take()]
    }
}

impl rustls::KeyLog for TrafficSecretLog {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let slot = match label {
            CLIENT_TRAFFIC_SECRET_0 => 0,
            SERVER_TRAFFIC_SECRET_0 => 1,
            _ => return,
        };
        let mut slots = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots[slot] = Some(SecretBytes::from_slice(secret));
    }

    fn will_log(&self, label: &str) -> bool {
        matches!(label, CLIENT_TRAFFIC_SECRET_0 | SERVER_TRAFFIC_SECRET_0)
    }
}

impl std::fmt::Debug for TrafficSecretLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrafficSecretLog(<redacted>)")
    }
}

/// A rustls client connection fed with relayed bytes.
pub struct RelayedTlsClient {
    conn: ClientConnection,
    splitter: RecordSplitter,
    after_handshake: Vec<Record>,
    traffic_secrets: Arc<TrafficSecretLog>,
}

impl std::fmt::Debug for RelayedTlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayedTlsClient")
            .field("handshaking", &self.conn.is_handshaking())
            .field("buffered", &self.splitter.buffered())
            .finish_non_exhaustive()
    }
}

impl RelayedTlsClient {
    /// Starts a handshake; the ClientHello is ready in [`RelayedTlsClient::take_outgoing`].
    pub fn new(request: &ConnectRequest, roots: &RootStore) -> Result<Self> {
        let mut config = request.client_config(roots)?;
        let traffic_secrets = Arc::new(TrafficSecretLog::default());
        config.key_log = traffic_secrets.clone();
        let name = ServerName::try_from(request.hostname.clone())
            .map_err(|e| TeeError::InvalidRequest(format!("hostname: {e}")))?;
        let conn = ClientConnection::new(Arc::new(config), name)?;
        Ok(RelayedTlsClient {
            conn,
            splitter: RecordSplitter::any_version(),
            after_handshake: Vec::new(),
            traffic_secrets,
        })
    }

    /// Bytes rustls wants sent to the server (possibly none).
    pub fn take_outgoing(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out)?;
        }
        Ok(out)
    }

    /// Bytes the relay read from the server, cut anywhere. Handshake records go to rustls; records after the
    /// handshake completed are kept for the split record layer. On a TLS error rustls has usually queued an
    /// alert: [`RelayedTlsClient::take_outgoing`] still returns it, for the relay to send before closing.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        for record in self.splitter.push(chunk)? {
            if !self.conn.is_handshaking() || !self.after_handshake.is_empty() {
                if self.after_handshake.len() >= MAX_RECORDS_BEFORE_FINISH {
                    return Err(TeeError::UnexpectedRecord(
                        "too many records after the handshake: call finish() once it completes",
                    ));
                }
                self.after_handshake.push(record);
                continue;
            }
            let bytes = record.to_bytes();
            let mut rd = bytes.as_slice();
            while !rd.is_empty() {
                if self.conn.read_tls(&mut rd)? == 0 {
                    return Err(TeeError::UnexpectedRecord("rustls accepted no bytes"));
                }
                self.conn.process_new_packets()?;
            }
        }
        Ok(())
    }

    /// True once rustls has verified the server's Finished.
    pub fn is_handshake_complete(&self) -> bool {
        !self.conn.is_handshaking()
    }

    /// Extracts the traffic secrets into TEE_K's record layer. Requires a complete handshake and that every
    /// outgoing byte (the client Finished) was taken.
    pub fn finish(self) -> Result<EstablishedSession> {
        let conn = self.conn;
        if conn.is_handshaking() || conn.wants_write() {
            return Err(TeeError::HandshakeIncomplete);
        }
        let negotiated = conn
            .negotiated_cipher_suite()
            .ok_or(TeeError::HandshakeIncomplete)?;
        let suite = CipherSuite::from_rustls(negotiated.suite())?;
        let certificates = conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| CertificateInfo::from_der(c))
            .collect::<Result<Vec<_>>>()?;
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let secrets = conn.dangerous_extract_secrets()?;
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        let (tx_key, tx_iv) = traffic_parts(suite, &tx)?;
        let (rx_key, rx_iv) = traffic_parts(suite, &rx)?;
        let (writer, reader) = match (suite.version(), self.traffic_secrets.take()) {
            (TlsVersion::Tls13, [Some(client), Some(server)]) => {
                // Derive key and IV ourselves (so KeyUpdate can follow) and check them against rustls.
                let writer =
                    TeeKWriter::from_traffic_secret(suite, client.expose_secret(), tx_seq)?;
                let reader =
                    TeeKReader::from_traffic_secret(suite, server.expose_secret(), rx_seq)?;
                let check =
                    |kind: &str, key: &[u8], iv: &[u8], secret: &SecretBytes| -> Result<()> {
                        let ts = TrafficSecret::new(suite, secret.expose_secret())?;
                        if ts.key()?.expose_secret() == key && ts.iv()?.expose_secret() == iv {
                            Ok(())
                        } else {
                            Err(TeeError::Unsupported(format!(
                                "{kind} traffic secret does not match the extracted key"
                            )))
                        }
                    };
                check("client", tx_key, tx_iv, &client)?;
                check("server", rx_key, rx_iv, &server)?;
                (writer, reader)
            }
            _ => (
                TeeKWriter::new(suite, tx_key, tx_iv, tx_seq)?,
                TeeKReader::new(suite, rx_key, rx_iv, rx_seq)?,
            ),
        };
        let mut splitter = self.splitter;
        splitter.set_max_payload(suite.version().max_ciphertext());
        tracing::info!(%suite, tx_seq, rx_seq, "TLS handshake complete, traffic keys extracted");
        Ok(EstablishedSession {
            suite,
            alpn,
            certificates,
            writer,
            reader,
            pending_records: self.after_handshake,
            splitter,
        })
    }
}

/// Key and IV of one extracted direction; the AEAD must be the negotiated suite's.
fn traffic_parts(suite: CipherSuite, secrets: &ConnectionTrafficSecrets) -> Result<(&[u8], &[u8])> {
    let (algorithm, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (AeadAlgorithm::Aes128Gcm, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (AeadAlgorithm::Aes256Gcm, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (AeadAlgorithm::ChaCha20Poly1305, key, iv)
        }
        _ => return Err(TeeError::Unsupported("extracted AEAD".into())),
    };
    if algorithm != suite.aead() {
        return Err(TeeError::Unsupported(format!(
            "extracted {algorithm:?} keys for {suite}"
        )));
    }
    Ok((key.as_ref(), iv.as_ref()))
}

/// A finished handshake: what TEE_K keeps to run the split record layer.
#[derive(Debug)]
pub struct EstablishedSession {
    /// The negotiated suite (its version included).
    pub suite: CipherSuite,
    /// The negotiated ALPN protocol, if any.
    pub alpn: Option<Vec<u8>>,
    /// The server's chain as presented, leaf first (validated by rustls against the root store).
    pub certificates: Vec<CertificateInfo>,
    /// Client-to-server direction.
    pub writer: TeeKWriter,
    /// Server-to-client direction.
    pub reader: TeeKReader,
    /// Whole records that arrived after the handshake in the same chunks (e.g. NewSessionTickets).
    pub pending_records: Vec<Record>,
    /// The splitter with any partial record, its limit set for the negotiated version.
    pub splitter: RecordSplitter,
}
