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

/// The rustls this room builds configurations of, for callers that
/// serve them ([`Tls::https_server`]).
pub use futures_rustls::rustls;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, Resumption};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ParsedCertificate, ResolvesServerCert,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The crypto provider of every rustls configuration hedgerow makes (the
/// cluster port, an HTTPS endpoint, the PostgreSQL store); an HTTPS
/// client talking to a node (the CLI's) can use the same.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
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

    /// A server configuration for an HTTPS endpoint of this node other
    /// than the cluster port, such as the CLI's control API: this node's
    /// certificate and key (re-read like the cluster port's), TLS 1.3,
    /// HTTP/1.1 by ALPN. It asks for no client certificate: the endpoint
    /// authenticates its callers itself (the CLI by a bearer token). An
    /// HTTPS client checks the certificate's DNS or IP names as usual,
    /// so the certificate must name the host it is reached by
    /// (`hedgerow certs --host`); the CA file is not read here.
    ///
    /// Fails if the certificate and key do not load or do not match.
    pub fn https_server(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = crypto_provider();
        let sources = [
            ("certificate", self.cert.clone()),
            ("private key", self.key.clone()),
        ];
        let keys = provider.clone();
        let certs = Reloading::new("https", sources, self.reload_every, move |[cert, key]| {
            certified_key(cert, key, &keys)
        })?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(ReloadingCert(certs)));
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(server))
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
    cluster: String,
    material: Reloading<Material, 3>,
}

impl TlsContext {
    /// Loads `tls` for `node` of `cluster`; fails if the material is not
    /// usable or the certificate does not name this node.
    pub(crate) fn new(tls: Tls, cluster: &str, node: &str) -> Result<Self, TlsError> {
        let (c, n) = (cluster.to_string(), node.to_string());
        let sources = [
            ("CA bundle", tls.ca.clone()),
            ("certificate", tls.cert.clone()),
            ("private key", tls.key.clone()),
        ];
        let material = Reloading::new("cluster port", sources, tls.reload_every, move |b| {
            build(b, &c, &n)
        })?;
        Ok(TlsContext {
            cluster: cluster.to_string(),
            material,
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
        self.material.current()
    }
}

/// Something built from PEM sources, built again when their bytes change:
/// the one place the "look again, keep the old if the new does not load"
/// rule lives, for the cluster port and for an HTTPS endpoint.
struct Reloading<T, const N: usize> {
    what: &'static str,
    sources: [(&'static str, PemSource); N],
    every: Duration,
    build: Box<Build<T, N>>,
    current: Mutex<Loaded<T, N>>,
}

/// How a [`Reloading`] makes its value from the bytes of its sources.
type Build<T, const N: usize> = dyn Fn(&[Arc<[u8]>; N]) -> Result<T, TlsError> + Send + Sync;

struct Loaded<T, const N: usize> {
    built: Arc<T>,
    /// The bytes it was built from, to tell a change.
    bytes: [Arc<[u8]>; N],
    checked: Instant,
}

impl<T, const N: usize> Reloading<T, N> {
    /// Reads and builds once; an error here is the caller's (a node does
    /// not start on material that does not load).
    fn new(
        what: &'static str,
        sources: [(&'static str, PemSource); N],
        every: Duration,
        build: impl Fn(&[Arc<[u8]>; N]) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let bytes = read_sources(&sources)?;
        let built = Arc::new(build(&bytes)?);
        Ok(Reloading {
            what,
            sources,
            every,
            build: Box::new(build),
            current: Mutex::new(Loaded {
                built,
                bytes,
                checked: Instant::now(),
            }),
        })
    }

    /// What new connections use, re-read first if the last look is older
    /// than the interval.
    fn current(&self) -> Arc<T> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.checked.elapsed() < self.every {
            return cur.built.clone();
        }
        cur.checked = Instant::now();
        match read_sources(&self.sources) {
            Ok(bytes) if bytes == cur.bytes => {}
            Ok(bytes) => match (self.build)(&bytes) {
                Ok(built) => {
                    tracing::info!(
                        endpoint = self.what,
                        "tls: certificate material changed; new connections use it"
                    );
                    cur.built = Arc::new(built);
                    cur.bytes = bytes;
                }
                Err(e) => tracing::warn!(
                    endpoint = self.what,
                    error = %e,
                    "tls: new certificate material does not load; keeping the old"
                ),
            },
            Err(e) => tracing::warn!(
                endpoint = self.what,
                error = %e,
                "tls: keeping the old certificate material"
            ),
        }
        cur.built.clone()
    }
}

fn read_sources<const N: usize>(
    sources: &[(&'static str, PemSource); N],
) -> Result<[Arc<[u8]>; N], TlsError> {
    let mut failed = None;
    let bytes = sources.each_ref().map(|(what, s)| {
        s.read(what).unwrap_or_else(|e| {
            failed.get_or_insert(e);
            Arc::from(&[][..])
        })
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(bytes),
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
    let provider = crypto_provider();
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

fn certified_key(
    cert: &[u8],
    key: &[u8],
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certs(cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
        what: "private key",
        detail: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(TlsError::Rustls)
}

/// An HTTPS endpoint's certificate, looked at again as the cluster
/// port's is.
struct ReloadingCert(Reloading<CertifiedKey, 2>);

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
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

#[cfg(test)]
#[cfg(feature = "certs")]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// The certificate a server built from `config` shows a client that
    /// trusts `ca` and asks for `host`, or the handshake's error.
    fn shown(config: Arc<ServerConfig>, ca: &str, host: &str) -> Result<Vec<u8>, rustls::Error> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let _ = tls.conn.complete_io(&mut tls.sock);
        });
        let client = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(ca.as_bytes()).unwrap())
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut tcp = TcpStream::connect(addr).unwrap();
        let done = loop {
            if !conn.is_handshaking() {
                break Ok(());
            }
            if let Err(e) = conn.complete_io(&mut tcp) {
                break Err(e);
            }
        };
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        drop(tcp);
        let _ = server.join();
        match (done, cert) {
            (Ok(()), Some(cert)) => Ok(cert),
            (Ok(()), None) => panic!("a finished handshake without a certificate"),
            (Err(e), _) => Err(e
                .into_inner()
                .and_then(|e| e.downcast::<rustls::Error>().ok())
                .map(|e| *e)
                .unwrap_or(rustls::Error::General("handshake failed".into()))),
        }
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn an_https_endpoint_shows_the_node_certificate_and_picks_up_a_new_one() {
        let dir = std::env::temp_dir().join(format!("hedgerow-https-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_file, cert_file, key_file) =
            (dir.join("ca.pem"), dir.join("n1.pem"), dir.join("n1.key"));
        let ca = ClusterCa::new("shop").unwrap();
        let first = ca.node_with_hosts("n1", &["localhost"]).unwrap();
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        std::fs::write(&cert_file, &first.cert_pem).unwrap();
        std::fs::write(&key_file, &first.key_pem).unwrap();
        let tls = Tls::from_files(&ca_file, &cert_file, &key_file).reload_every(Duration::ZERO);
        let config = tls.https_server().unwrap();

        assert_eq!(
            shown(config.clone(), &ca.cert_pem(), "localhost"),
            Ok(der(&first.cert_pem))
        );
        // A name the certificate does not carry, or another CA: refused
        // by the client, as any HTTPS client would.
        assert!(shown(config.clone(), &ca.cert_pem(), "127.0.0.1").is_err());
        let other = ClusterCa::new("shop").unwrap();
        assert!(shown(config.clone(), &other.cert_pem(), "localhost").is_err());

        // Rotated files: the next connection shows the new certificate.
        let second = ca.node_with_hosts("n1", &["localhost"]).unwrap();
        std::fs::write(&key_file, &second.key_pem).unwrap();
        std::fs::write(&cert_file, &second.cert_pem).unwrap();
        assert_eq!(
            shown(config.clone(), &ca.cert_pem(), "localhost"),
            Ok(der(&second.cert_pem))
        );

        // Half-written material (a key that is not the certificate's):
        // the last good pair stays in use.
        std::fs::write(&key_file, &first.key_pem).unwrap();
        assert_eq!(
            shown(config, &ca.cert_pem(), "localhost"),
            Ok(der(&second.cert_pem))
        );

        // Material that never loads is an error up front.
        let bad = Tls::from_files(&ca_file, &cert_file, &key_file);
        assert!(matches!(bad.https_server(), Err(TlsError::Rustls(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
