//! Mutual TLS between nodes: the certificate material ([`Tls`]), the rule
//! that decides whom to trust, and re-reading the files when they change.
//!
//! A peer is trusted when its certificate chains to the configured CA
//! **and** names this cluster with a subject alternative name URI
//! `hedgerow://CLUSTER/NODE-ID`; the transport then holds the node id its
//! hello claims to that certificate (`peer_node_ids`). TLS 1.3 only,
//! rustls on the ring provider, no session resumption (every connection
//! shows its certificate).
//!
//! This room builds rustls configurations; it never touches a socket
//! (the transport's `secure` room does) and never reads a protocol
//! message.

#[cfg(feature = "certs")]
mod authority;
mod san;

#[cfg(feature = "certs")]
pub use authority::{ClusterCa, NodeCert};
pub use san::{node_uri, parse_node_uri, san_uris};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_rustls::rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, Resumption};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The crypto provider of every rustls configuration hedgerow makes (the
/// cluster port and the PostgreSQL store).
pub(crate) fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    // ring rather than aws-lc-rs: no cmake, a quick build. rustls marks
    // ring's provider deprecated for lacking post-quantum key exchange;
    // that is the price, and the one place it is paid.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How often certificate files are looked at again by default.
const DEFAULT_RELOAD: Duration = Duration::from_secs(10);

/// Mutual TLS for the cluster port: a CA bundle, this node's certificate
/// (chain) and its private key, as PEM files or bytes; see
/// [`Builder::tls`](crate::Builder::tls).
///
/// The certificate must name this node with the URI
/// `hedgerow://CLUSTER/NODE-ID` ([`node_uri`]) and be good for both
/// server and client authentication (`hedgerow certs` makes such
/// certificates). Files are looked at again every
/// [`Tls::reload_every`]: new connections use the new material, existing
/// ones stay up; material that does not load (a half-written file) is
/// logged and the old material kept.
///
/// ```
/// let tls = hedgerow::Tls::from_files("certs/ca.pem", "certs/n1.pem", "certs/n1.key");
/// # let _ = tls;
/// ```
#[derive(Clone)]
pub struct Tls {
    ca: PemSource,
    cert: PemSource,
    key: PemSource,
    reload_every: Duration,
}

#[derive(Clone)]
enum PemSource {
    File(PathBuf),
    Bytes(Arc<[u8]>),
}

impl PemSource {
    fn read(&self, what: &'static str) -> Result<Arc<[u8]>, TlsError> {
        match self {
            PemSource::Bytes(b) => Ok(b.clone()),
            PemSource::File(path) => match std::fs::read(path) {
                Ok(b) => Ok(Arc::from(b)),
                Err(source) => Err(TlsError::Read {
                    what,
                    path: path.clone(),
                    source,
                }),
            },
        }
    }

    fn path(&self) -> Option<&Path> {
        match self {
            PemSource::File(p) => Some(p),
            PemSource::Bytes(_) => None,
        }
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key's bytes.
        f.debug_struct("Tls")
            .field("ca", &self.ca.path())
            .field("cert", &self.cert.path())
            .field("key", &self.key.path())
            .field("reload_every", &self.reload_every)
            .finish()
    }
}

impl Tls {
    /// TLS from PEM files: the CA bundle peers must chain to, this node's
    /// certificate (leaf first, then any intermediates) and its key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn from_files(
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        Tls {
            ca: PemSource::File(ca.into()),
            cert: PemSource::File(cert.into()),
            key: PemSource::File(key.into()),
            reload_every: DEFAULT_RELOAD,
        }
    }

    /// TLS from PEM bytes held in memory (never re-read).
    pub fn from_pem(
        ca: impl Into<Vec<u8>>,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        Tls {
            ca: PemSource::Bytes(Arc::from(ca.into())),
            cert: PemSource::Bytes(Arc::from(cert.into())),
            key: PemSource::Bytes(Arc::from(key.into())),
            reload_every: DEFAULT_RELOAD,
        }
    }

    /// How often the files are looked at again (default 10 s); checked
    /// when a connection starts, so an idle node reads nothing.
    pub fn reload_every(mut self, every: Duration) -> Self {
        self.reload_every = every;
        self
    }

    fn read_all(&self) -> Result<[Arc<[u8]>; 3], TlsError> {
        Ok([
            self.ca.read("CA bundle")?,
            self.cert.read("certificate")?,
            self.key.read("private key")?,
        ])
    }
}

/// Why TLS material could not be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// Which file (CA bundle, certificate, private key).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file held no usable PEM of the kind expected.
    Pem {
        /// Which file.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// This node's own certificate does not name it.
    Identity {
        /// The name it should carry.
        expected: String,
        /// The `hedgerow://` names it carries.
        found: Vec<String>,
    },
    /// rustls refused the material (e.g. a key that does not match the
    /// certificate).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { what, path, source } => {
                write!(
                    f,
                    "tls: cannot read the {what} {}: {source}",
                    path.display()
                )
            }
            TlsError::Pem { what, detail } => write!(f, "tls: the {what}: {detail}"),
            TlsError::Identity { expected, found } if found.is_empty() => write!(
                f,
                "tls: this node's certificate carries no hedgerow:// name; it must name {expected} \
                 (make one with `hedgerow certs`)"
            ),
            TlsError::Identity { expected, found } => write!(
                f,
                "tls: this node's certificate names {}, not {expected}",
                found.join(", ")
            ),
            TlsError::Rustls(e) => write!(f, "tls: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            TlsError::Rustls(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a peer's certificate was refused, beyond what rustls checks
/// itself; carried inside rustls' error so the transport can count it.
#[derive(Debug)]
pub(crate) enum PeerCertError {
    /// It chains to our CA but names no node of this cluster.
    WrongCluster { cluster: String, found: Vec<String> },
}

impl fmt::Display for PeerCertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerCertError::WrongCluster { cluster, found } if found.is_empty() => write!(
                f,
                "the peer's certificate names no hedgerow:// node (cluster {cluster} expected)"
            ),
            PeerCertError::WrongCluster { cluster, found } => write!(
                f,
                "the peer's certificate names {}, not a node of cluster {cluster}",
                found.join(", ")
            ),
        }
    }
}

impl std::error::Error for PeerCertError {}

/// The node ids `cert` (DER) names in `cluster`.
pub(crate) fn peer_node_ids(cert: &CertificateDer<'_>, cluster: &str) -> Vec<String> {
    san::node_ids_for(cert.as_ref(), cluster)
}

/// The rustls configurations built from one load of the material.
pub(crate) struct Material {
    pub(crate) client: Arc<ClientConfig>,
    pub(crate) server: Arc<ServerConfig>,
}

/// A node's TLS: its material, re-read when the files change.
pub(crate) struct TlsContext {
    tls: Tls,
    cluster: String,
    node: String,
    current: Mutex<Loaded>,
}

struct Loaded {
    material: Arc<Material>,
    /// The bytes it was built from, to tell a change.
    bytes: [Arc<[u8]>; 3],
    checked: Instant,
}

impl TlsContext {
    /// Loads `tls` for `node` of `cluster`; fails if the material is not
    /// usable or the certificate does not name this node.
    pub(crate) fn new(tls: Tls, cluster: &str, node: &str) -> Result<Self, TlsError> {
        let bytes = tls.read_all()?;
        let material = Arc::new(build(&bytes, cluster, node)?);
        Ok(TlsContext {
            tls,
            cluster: cluster.to_string(),
            node: node.to_string(),
            current: Mutex::new(Loaded {
                material,
                bytes,
                checked: Instant::now(),
            }),
        })
    }

    /// The cluster peers' certificates must name.
    pub(crate) fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The material new connections use: re-read first if the last look
    /// at the files is older than the reload interval. Material that does
    /// not load is logged and the old kept.
    pub(crate) fn material(&self) -> Arc<Material> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.checked.elapsed() < self.tls.reload_every {
            return cur.material.clone();
        }
        cur.checked = Instant::now();
        match self.tls.read_all() {
            Ok(bytes) if bytes == cur.bytes => {}
            Ok(bytes) => match build(&bytes, &self.cluster, &self.node) {
                Ok(m) => {
                    tracing::info!("tls: certificate material changed; new connections use it");
                    cur.material = Arc::new(m);
                    cur.bytes = bytes;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tls: new certificate material does not load; keeping the old")
                }
            },
            Err(e) => tracing::warn!(error = %e, "tls: keeping the old certificate material"),
        }
        cur.material.clone()
    }
}

fn build(bytes: &[Arc<[u8]>; 3], cluster: &str, node: &str) -> Result<Material, TlsError> {
    let [ca, cert, key] = bytes;
    let roots = Arc::new(roots(ca)?);
    let chain = certs(cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
        what: "private key",
        detail: e.to_string(),
    })?;
    check_own_name(&chain[0], cluster, node)?;
    let provider = ring_provider();
    let verifier = Arc::new(PeerVerifier::new(roots, cluster, &provider)?);
    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_auth_cert(chain.clone(), key.clone_key())
        .map_err(TlsError::Rustls)?;
    client.resumption = Resumption::disabled();
    client.enable_sni = false;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsError::Rustls)?;
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
    Ok(Material {
        client: Arc::new(client),
        server: Arc::new(server),
    })
}

fn certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            detail: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn roots(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certs(pem, "CA bundle")? {
        roots.add(ca).map_err(|e| TlsError::Pem {
            what: "CA bundle",
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn check_own_name(leaf: &CertificateDer<'_>, cluster: &str, node: &str) -> Result<(), TlsError> {
    let expected = node_uri(cluster, node);
    let found: Vec<String> = san_uris(leaf)
        .unwrap_or_default()
        .into_iter()
        .filter(|u| parse_node_uri(u).is_some())
        .collect();
    if found.contains(&expected) {
        Ok(())
    } else {
        Err(TlsError::Identity { expected, found })
    }
}

/// Both sides' verifier: the chain to our CA (rustls' webpki checks,
/// validity dates included), then a name in this cluster.
struct PeerVerifier {
    roots: Arc<RootCertStore>,
    cluster: String,
    algs: WebPkiSupportedAlgorithms,
    clients: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl PeerVerifier {
    fn new(
        roots: Arc<RootCertStore>,
        cluster: &str,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Pem {
                what: "CA bundle",
                detail: e.to_string(),
            })?;
        Ok(PeerVerifier {
            roots,
            cluster: cluster.to_string(),
            algs: provider.signature_verification_algorithms,
            clients,
        })
    }

    fn check_cluster(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if !peer_node_ids(leaf, &self.cluster).is_empty() {
            return Ok(());
        }
        let found = san_uris(leaf)
            .unwrap_or_default()
            .into_iter()
            .filter(|u| parse_node_uri(u).is_some())
            .collect();
        let why = PeerCertError::WrongCluster {
            cluster: self.cluster.clone(),
            found,
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(why)),
        )))
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        self.check_cluster(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.clients.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.clients
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check_cluster(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
