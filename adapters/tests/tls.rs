//! Mutual TLS between real nodes over loopback (tokio): a TLS cluster
//! forms; a peer with a certificate from another CA, another cluster's
//! certificate, an expired certificate, a hello that claims another id
//! than its certificate, and a plaintext peer are each refused, counted
//! by reason, and never join the view (none of their frames reached the
//! core); a node with TLS off refuses a TLS peer; rotated certificate
//! files are picked up, and a half-written one keeps the old material.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_rustls::rustls;
use hedgerow::runtime::{Runtime, TokioRuntime};
use hedgerow::store::MemoryStore;
use hedgerow::tls::{ClusterCa, NodeCert};
use hedgerow::{Hedgerow, Tls, TransportStats};
use hedgerow_core::wire::{decode_frame, encode_frame, Frame};
use hedgerow_core::{Hello, NodeId};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

mod support;
use support::{blocking, local_node, tokio_runtime, wait_until};

const CLUSTER: &str = "tls";
const WAIT: Duration = Duration::from_secs(20);

fn tls_for(ca: &ClusterCa, cert: &NodeCert) -> Tls {
    Tls::from_pem(ca.cert_pem(), cert.cert_pem.clone(), cert.key_pem.clone())
}

async fn tls_node(
    rt: &TokioRuntime,
    store: &MemoryStore,
    name: &str,
    tls: Option<Tls>,
) -> Hedgerow {
    local_node(rt, store, (CLUSTER, name), |b| match tls {
        Some(t) => b.tls(t),
        None => b,
    })
    .await
}

/// Waits until `counter` of `a`'s stats reaches `n`, then checks that
/// `a` is still alone in its view: the refused peer never joined.
async fn refused(rt: &TokioRuntime, a: &Hedgerow, n: u64, counter: fn(&TransportStats) -> u64) {
    let seen = wait_until(rt, WAIT, || counter(&a.transport_stats()) >= n).await;
    assert!(seen, "refusal not counted: {:?}", a.transport_stats());
    let ids: Vec<_> = a.members().into_iter().map(|m| m.id).collect();
    assert_eq!(
        ids,
        vec![a.id().clone()],
        "a refused peer got into the view"
    );
}

async fn started_leader(rt: &TokioRuntime, store: &MemoryStore, ca: &ClusterCa) -> Hedgerow {
    let a = tls_node(rt, store, "a", Some(tls_for(ca, &ca.node("a").unwrap()))).await;
    assert!(wait_until(rt, WAIT, || a.is_leader()).await);
    a
}

#[test]
fn a_tls_cluster_forms_and_strangers_are_refused_by_reason() {
    tokio_runtime().block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let ca = ClusterCa::new(CLUSTER).unwrap();
        let a = started_leader(&rt, &store, &ca).await;

        // Another CA, with a certificate that names the right node.
        let other = ClusterCa::new(CLUSTER).unwrap();
        let x = tls_node(
            &rt,
            &store,
            "x",
            Some(tls_for(&other, &other.node("x").unwrap())),
        )
        .await;
        // x sees a's certificate first, refuses it and alerts a, which
        // counts a failed handshake; x never shows its own.
        refused(&rt, &a, 2, |s| s.failed_tls_handshakes).await;
        assert!(
            x.transport_stats().refused_untrusted_cert >= 1,
            "{:?}",
            x.transport_stats()
        );
        drop(x);

        // Our CA, but the certificate names a node of another cluster.
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let y_ours = ca
            .named("hedgerow://elsewhere/y", now - hour, now + hour)
            .unwrap();
        let attempt = raw_tls_hello(a.local_addr(), &y_ours, "y");
        let got = blocking(&rt, attempt).await;
        assert!(got.is_err(), "{got:?}");
        refused(&rt, &a, 1, |s| s.refused_wrong_cluster).await;

        // Expired: valid until an hour ago.
        let old = ca.node_valid("z", now - 2 * hour, now - hour).unwrap();
        let z = tls_node(&rt, &store, "z", Some(tls_for(&ca, &old))).await;
        refused(&rt, &a, 2, |s| s.refused_expired_cert).await;
        drop(z);

        // A good certificate for "m", a hello claiming "b".
        let m = ca.node("m").unwrap();
        let attempt = raw_tls_hello(a.local_addr(), &m, "b");
        let answer = blocking(&rt, attempt).await.unwrap();
        match answer {
            Frame::Refuse(why) => assert!(why.contains("certificate names m"), "{why}"),
            other => panic!("a hello with a foreign id was answered: {other:?}"),
        }
        refused(&rt, &a, 1, |s| s.refused_cert_id_mismatch).await;

        // Plaintext: a node with TLS off, and a raw plaintext hello.
        let p = tls_node(&rt, &store, "p", None).await;
        refused(&rt, &a, 2, |s| s.refused_plaintext_peer).await;
        // The plaintext node was told why and counts nothing against us.
        drop(p);
        let addr = a.local_addr();
        let answer = blocking(&rt, move || plain_hello(addr, "q")).await;
        match answer {
            Some(Frame::Refuse(why)) => assert!(why.contains("requires mutual TLS"), "{why}"),
            other => panic!("a plaintext hello got {other:?}"),
        }

        // A proper member still gets in.
        let b = tls_node(&rt, &store, "b", Some(tls_for(&ca, &ca.node("b").unwrap()))).await;
        let joined = || a.members().len() == 2 && b.leader().map(|l| l.id).as_ref() == Some(a.id());
        assert!(
            wait_until(&rt, WAIT, joined).await,
            "{:?}",
            a.transport_stats()
        );
    });
}

#[test]
fn a_plaintext_node_refuses_a_tls_peer_and_says_why() {
    tokio_runtime().block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let a = tls_node(&rt, &store, "a", None).await;
        assert!(wait_until(&rt, WAIT, || a.is_leader()).await);
        let ca = ClusterCa::new(CLUSTER).unwrap();
        let t = tls_node(&rt, &store, "t", Some(tls_for(&ca, &ca.node("t").unwrap()))).await;
        refused(&rt, &a, 2, |s| s.refused_tls_peer).await;
        drop(t);
    });
}

#[test]
fn rotated_certificate_files_are_picked_up_and_a_broken_one_keeps_the_old() {
    tokio_runtime().block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let dir = tempfile::tempdir().unwrap();
        let (ca1, ca2) = (
            ClusterCa::new(CLUSTER).unwrap(),
            ClusterCa::new(CLUSTER).unwrap(),
        );
        let a_cert = ca1.node("a").unwrap();
        let path = |f: &str| dir.path().join(f);
        std::fs::write(path("ca.pem"), ca1.cert_pem()).unwrap();
        std::fs::write(path("a.pem"), &a_cert.cert_pem).unwrap();
        std::fs::write(path("a.key"), &a_cert.key_pem).unwrap();
        let files = Tls::from_files(path("ca.pem"), path("a.pem"), path("a.key"))
            .reload_every(Duration::from_millis(20));
        let a = tls_node(&rt, &store, "a", Some(files)).await;
        assert!(wait_until(&rt, WAIT, || a.is_leader()).await);

        // b trusts both CAs but holds a certificate from the second,
        // which a does not trust yet.
        let both = format!("{}{}", ca1.cert_pem(), ca2.cert_pem());
        let b_cert = ca2.node("b").unwrap();
        let b_tls = Tls::from_pem(both.clone(), b_cert.cert_pem, b_cert.key_pem);
        let b = tls_node(&rt, &store, "b", Some(b_tls)).await;
        refused(&rt, &a, 2, |s| s.refused_untrusted_cert).await;

        // A half-written CA file: a keeps what it had, so c (first CA)
        // still gets in.
        std::fs::write(path("ca.pem"), &ca1.cert_pem()[..40]).unwrap();
        let c = tls_node(
            &rt,
            &store,
            "c",
            Some(tls_for(&ca1, &ca1.node("c").unwrap())),
        )
        .await;
        let c_in = || a.members().iter().any(|m| m.id == *c.id());
        assert!(
            wait_until(&rt, WAIT, c_in).await,
            "{:?}",
            a.transport_stats()
        );

        // The whole bundle: b's next attempt is let in.
        std::fs::write(path("ca.pem"), both).unwrap();
        let b_in = || a.members().iter().any(|m| m.id == *b.id());
        assert!(
            wait_until(&rt, WAIT, b_in).await,
            "{:?}",
            a.transport_stats()
        );
    });
}

/// Dials `to` with TLS as `cert`, says hello as `claim` and returns the
/// first frame that comes back, or the error that ended it.
fn raw_tls_hello(
    to: SocketAddr,
    cert: &NodeCert,
    claim: &str,
) -> impl FnOnce() -> Result<Frame, String> + Send + 'static {
    let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let claim = claim.to_string();
    move || {
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer))
            .with_client_auth_cert(chain, key)
            .unwrap();
        let name = ServerName::try_from("hedgerow").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let sock = TcpStream::connect(to).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let hello = Hello::new(CLUSTER, NodeId::new(claim).unwrap(), 1, "127.0.0.1:1");
        let mut buf = Vec::new();
        encode_frame(&Frame::Hello(hello), 1 << 20, &mut buf).unwrap();
        tls.write_all(&buf).map_err(|e| e.to_string())?;
        read_frame(&mut tls).ok_or_else(|| "closed".to_string())
    }
}

fn plain_hello(to: SocketAddr, claim: &str) -> Option<Frame> {
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = Hello::new(CLUSTER, NodeId::new(claim).unwrap(), 1, "127.0.0.1:1");
    let mut buf = Vec::new();
    encode_frame(&Frame::Hello(hello), 1 << 20, &mut buf).unwrap();
    s.write_all(&buf).ok()?;
    read_frame(&mut s)
}

fn read_frame(r: &mut impl Read) -> Option<Frame> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some((f, _))) = decode_frame(&got, 1 << 20) {
            return Some(f);
        }
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The attacker does not care whom it talks to.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        #[allow(deprecated)]
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
