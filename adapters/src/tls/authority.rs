//! Making a cluster's certificates: a CA and node certificates that name
//! `hedgerow://CLUSTER/NODE-ID` and serve as both server and client
//! certificates (feature `certs`; `hedgerow certs` is its command line).
//! It only makes PEM text; writing files is the caller's business.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use super::{node_uri, TlsError};

/// How long a CA made here is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a node certificate made here is valid by default.
pub const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far back validity starts, for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A cluster's certificate authority: signs node certificates.
///
/// ```
/// let ca = hedgerow::tls::ClusterCa::new("shop").unwrap();
/// let n1 = ca.node("n1").unwrap();
/// let tls = hedgerow::Tls::from_pem(ca.cert_pem(), n1.cert_pem, n1.key_pem);
/// # let _ = tls;
/// ```
pub struct ClusterCa {
    cluster: String,
    key: KeyPair,
    cert: Certificate,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// A node's certificate and private key, as PEM.
#[derive(Clone)]
pub struct NodeCert {
    /// The certificate (`--tls-cert`).
    pub cert_pem: String,
    /// Its private key (`--tls-key`); keep it secret.
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert").finish_non_exhaustive()
    }
}

fn rcgen_error(e: rcgen::Error) -> TlsError {
    TlsError::Pem {
        what: "generated certificate",
        detail: e.to_string(),
    }
}

impl ClusterCa {
    /// A new CA with a new key for `cluster` (which must not contain `/`).
    pub fn new(cluster: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(rcgen_error)?;
        Self::with_key(cluster, key)
    }

    /// The CA of `cluster` again from its key (`ca.key` as `hedgerow
    /// certs` writes it), to sign more nodes: the certificate made here
    /// has the same name and key as the first, so what it signs chains
    /// to the CA file already handed out.
    pub fn from_key_pem(cluster: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Pem {
            what: "CA key",
            detail: e.to_string(),
        })?;
        Self::with_key(cluster, key)
    }

    fn with_key(cluster: &str, key: KeyPair) -> Result<Self, TlsError> {
        if cluster.is_empty() || cluster.contains('/') || !cluster.is_ascii() {
            return Err(TlsError::Pem {
                what: "cluster id",
                detail: format!("{cluster:?} cannot name a certificate (ASCII, no '/', not empty)"),
            });
        }
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = name(&format!("hedgerow cluster {cluster} CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // A fixed start, so that the CA made again from its key is the
        // same certificate in every field that matters for chaining.
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = (SystemTime::now() + CA_VALIDITY).into();
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        Ok(ClusterCa {
            cluster: cluster.to_string(),
            key,
            cert,
        })
    }

    /// The CA certificate (`--tls-ca`), to give every node.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's private key; keep it off the nodes.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `node`, valid from an hour ago for a year.
    pub fn node(&self, node: &str) -> Result<NodeCert, TlsError> {
        let now = SystemTime::now();
        self.node_valid(node, now - BACKDATE, now + NODE_VALIDITY)
    }

    /// A certificate for `node` valid from `not_before` to `not_after`
    /// (tests make expired ones with it).
    pub fn node_valid(
        &self,
        node: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<NodeCert, TlsError> {
        self.named(&node_uri(&self.cluster, node), not_before, not_after)
    }

    /// A certificate signed by this CA whose only name is `uri`, whatever
    /// it is (tests make certificates for another cluster with it).
    pub fn named(
        &self,
        uri: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<NodeCert, TlsError> {
        let ia5 = uri.to_string().try_into().map_err(rcgen_error)?;
        self.sign(uri, vec![SanType::URI(ia5)], not_before, not_after)
    }

    /// A certificate for `node` that also names each of `hosts` (a DNS
    /// name, a wildcard like `*.hedgerow.prod.svc`, or an IP address), so
    /// that an HTTPS client reaching the node's control API by one of
    /// them accepts it; valid from an hour ago for a year.
    pub fn node_with_hosts(&self, node: &str, hosts: &[&str]) -> Result<NodeCert, TlsError> {
        let uri = node_uri(&self.cluster, node);
        let mut names = vec![SanType::URI(uri.clone().try_into().map_err(rcgen_error)?)];
        names.extend(host_names(hosts)?);
        let now = SystemTime::now();
        self.sign(&uri, names, now - BACKDATE, now + NODE_VALIDITY)
    }

    /// A certificate for a server that is no node, such as a PostgreSQL
    /// server the cluster's nodes verify, naming each of `hosts` (a DNS
    /// name or an IP address), valid from an hour ago for a year.
    pub fn server(&self, hosts: &[&str]) -> Result<NodeCert, TlsError> {
        let names = host_names(hosts)?;
        let now = SystemTime::now();
        let common = hosts.first().copied().unwrap_or("server");
        self.sign(common, names, now - BACKDATE, now + NODE_VALIDITY)
    }

    fn sign(
        &self,
        common: &str,
        names: Vec<SanType>,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<NodeCert, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common);
        params.subject_alt_names = names;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(rcgen_error)?;
        Ok(NodeCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// `hosts` as subject alternative names: IP addresses as such, the rest
/// as DNS names.
fn host_names(hosts: &[&str]) -> Result<Vec<SanType>, TlsError> {
    hosts
        .iter()
        .map(|host| match host.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(
                host.to_string().try_into().map_err(rcgen_error)?,
            )),
        })
        .collect()
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    dn
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::san::node_ids_for;
    use futures_rustls::rustls;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_node_certificate_names_its_node_and_cluster() {
        let ca = ClusterCa::new("shop").unwrap();
        let n = ca.node("web/7").unwrap();
        assert_eq!(node_ids_for(&der(&n.cert_pem), "shop"), vec!["web/7"]);
        assert!(node_ids_for(&der(&n.cert_pem), "other").is_empty());
        // The CA itself names no node.
        assert!(node_ids_for(&der(&ca.cert_pem()), "shop").is_empty());
    }

    #[test]
    fn a_server_certificate_names_its_hosts_and_no_node() {
        let ca = ClusterCa::new("shop").unwrap();
        let db = ca.server(&["db.internal", "127.0.0.1"]).unwrap();
        let db_der = CertificateDer::from(der(&db.cert_pem));
        let parsed = rustls::server::ParsedCertificate::try_from(&db_der).unwrap();
        let ip = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let dns = rustls_pki_types::ServerName::try_from("db.internal").unwrap();
        let other = rustls_pki_types::ServerName::try_from("db.example").unwrap();
        assert!(rustls::client::verify_server_name(&parsed, &ip).is_ok());
        assert!(rustls::client::verify_server_name(&parsed, &dns).is_ok());
        assert!(rustls::client::verify_server_name(&parsed, &other).is_err());
        assert!(node_ids_for(&der(&db.cert_pem), "shop").is_empty());
    }

    #[test]
    fn a_node_certificate_with_hosts_names_its_node_and_its_hosts() {
        let ca = ClusterCa::new("shop").unwrap();
        let n = ca
            .node_with_hosts("n1", &["localhost", "::1", "*.hedgerow.prod.svc"])
            .unwrap();
        let der_n = CertificateDer::from(der(&n.cert_pem));
        assert_eq!(node_ids_for(&der_n, "shop"), vec!["n1"]);
        let parsed = rustls::server::ParsedCertificate::try_from(&der_n).unwrap();
        for host in ["localhost", "::1", "n1.hedgerow.prod.svc"] {
            let name = rustls_pki_types::ServerName::try_from(host).unwrap();
            assert!(
                rustls::client::verify_server_name(&parsed, &name).is_ok(),
                "{host}"
            );
        }
        let other = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        assert!(rustls::client::verify_server_name(&parsed, &other).is_err());
    }

    #[test]
    fn a_cluster_with_a_slash_is_refused() {
        assert!(ClusterCa::new("a/b").is_err());
    }
}
