//! TLS in front of the hello: one code path over any runtime's stream.
//! A dialed connection starts a TLS client handshake when the node has
//! TLS on; an accepted one is told apart by its first byte (a TLS record
//! starts with 0x16, a hedgerow frame's length prefix with 0x00), so a
//! node with TLS on never talks to one without it, and each says why: the
//! refusing side answers with a plain `Refuse` frame, which the other
//! reads as such (a TLS dialer reads it from the bytes it captured).
//!
//! This room wraps streams and counts refusals; the certificate rules
//! live in [`crate::tls`], the hello in the transport.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, IoSlice};
use futures_rustls::rustls::{self, CertificateError};
use futures_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use hedgerow_core::wire::{decode_frame, encode_frame, Frame};
use rustls_pki_types::ServerName;

use super::stats::{bump, Counters};
use super::Closed;
use crate::tls::{peer_node_ids, PeerCertError, TlsContext};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// Bytes a TLS dialer keeps of what the peer sent, to explain a refusal.
const CAPTURE: usize = 1024;

/// What a refused peer told us, or we told it, in plain words.
const NEEDS_TLS: &str = "this node requires mutual TLS and the peer spoke plaintext: \
                         turn TLS on for it (--tls-ca, --tls-cert, --tls-key)";
const TLS_OFF: &str = "this node has TLS off and the peer spoke TLS: turn TLS on for \
                       every node of the cluster, or off for all";

/// A connection's stream: plain, or TLS over the runtime's stream.
pub(crate) enum Link<S> {
    /// No TLS (`--tls off`).
    Plain(Wire<S>),
    /// Mutual TLS, the peer's certificate verified.
    Tls(Box<TlsStream<Wire<S>>>),
}

impl<S> Link<S> {
    /// The node ids the peer's certificate names in `cluster`; `None`
    /// without TLS.
    fn certified_ids(&self, cluster: &str) -> Option<Vec<String>> {
        match self {
            Link::Plain(_) => None,
            Link::Tls(t) => {
                let certs = t.get_ref().1.peer_certificates().unwrap_or_default();
                Some(
                    certs
                        .first()
                        .map_or_else(Vec::new, |c| peer_node_ids(c, cluster)),
                )
            }
        }
    }
}

/// A runtime's stream with a byte read ahead put back, and optionally
/// the first bytes read kept aside.
pub(crate) struct Wire<S> {
    replay: Option<u8>,
    capture: Option<Vec<u8>>,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !buf.is_empty() {
            if let Some(b) = this.replay.take() {
                buf[0] = b;
                return Poll::Ready(Ok(1));
            }
        }
        let n = match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        if let Some(kept) = this.capture.as_mut() {
            let room = CAPTURE.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(&buf[..room]);
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Link<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Link::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Link<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Link::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Link::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_flush(cx),
            Link::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Link::Plain(s) => Pin::new(s).poll_close(cx),
            Link::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}

/// Why a peer was refused before its frames could reach the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// This node has TLS on; the peer spoke plaintext.
    Plaintext,
    /// This node has TLS off; the peer spoke TLS.
    TlsAtPlain,
    /// The certificate does not chain to our CA (or none was shown).
    Untrusted,
    /// The certificate is expired or not valid yet.
    Expired,
    /// The certificate names no node of this cluster.
    WrongCluster,
    /// The hello claims a node id the certificate does not name.
    IdMismatch,
    /// The TLS handshake failed otherwise (garbage, an alert, ...).
    Handshake,
}

fn count(counters: &Counters, why: Refusal) {
    bump(match why {
        Refusal::Plaintext => &counters.refused_plaintext_peer,
        Refusal::TlsAtPlain => &counters.refused_tls_peer,
        Refusal::Untrusted => &counters.refused_untrusted_cert,
        Refusal::Expired => &counters.refused_expired_cert,
        Refusal::WrongCluster => &counters.refused_wrong_cluster,
        Refusal::IdMismatch => &counters.refused_cert_id_mismatch,
        Refusal::Handshake => &counters.failed_tls_handshakes,
    });
}

/// What kind of failure a TLS handshake error is.
fn classify(e: &io::Error) -> Refusal {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return Refusal::Handshake;
    };
    match err {
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => Refusal::Expired,
        rustls::Error::InvalidCertificate(CertificateError::Other(o))
            if o.0.downcast_ref::<PeerCertError>().is_some() =>
        {
            Refusal::WrongCluster
        }
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            Refusal::Untrusted
        }
        _ => Refusal::Handshake,
    }
}

/// Refuses a peer that spoke the wrong language: a plain `Refuse` frame
/// it can read (a TLS dialer reads it from its capture), then close.
async fn refuse_plainly<S: AsyncWrite + Unpin>(s: &mut S, why: &str, max: u32) {
    let mut buf = Vec::new();
    if encode_frame(&Frame::Refuse(why.to_string()), max, &mut buf).is_ok() {
        let _ = s.write_all(&buf).await;
        let _ = s.flush().await;
    }
    let _ = s.close().await;
}

/// The accepting side: plain or TLS by the first byte, refusing a
/// mismatch with this node's setting.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    tls: Option<&TlsContext>,
    counters: &Counters,
    mut s: S,
    max: u32,
) -> Result<Link<S>, Closed> {
    let mut first = [0u8; 1];
    match s.read_exact(&mut first).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(Closed::Eof),
        Err(e) => return Err(Closed::Io(e)),
    }
    let is_tls = first[0] == TLS_HANDSHAKE;
    let mut wire = Wire {
        replay: Some(first[0]),
        capture: None,
        inner: s,
    };
    match (tls, is_tls) {
        (None, false) => Ok(Link::Plain(wire)),
        (Some(tls), true) => {
            let acceptor = TlsAcceptor::from(tls.material().server.clone());
            match acceptor.accept(wire).await {
                Ok(t) => Ok(Link::Tls(Box::new(t.into()))),
                Err(e) => {
                    let why = classify(&e);
                    count(counters, why);
                    Err(Closed::Protocol(format!("tls handshake refused: {e}")))
                }
            }
        }
        (Some(_), false) => {
            count(counters, Refusal::Plaintext);
            refuse_plainly(&mut wire.inner, NEEDS_TLS, max).await;
            Err(Closed::Protocol(NEEDS_TLS.into()))
        }
        (None, true) => {
            count(counters, Refusal::TlsAtPlain);
            refuse_plainly(&mut wire.inner, TLS_OFF, max).await;
            Err(Closed::Protocol(TLS_OFF.into()))
        }
    }
}

/// The dialing side: TLS first when this node has it on.
pub(crate) async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    tls: Option<&TlsContext>,
    counters: &Counters,
    s: S,
    max: u32,
) -> Result<Link<S>, Closed> {
    let Some(tls) = tls else {
        return Ok(Link::Plain(Wire {
            replay: None,
            capture: None,
            inner: s,
        }));
    };
    let wire = Wire {
        replay: None,
        capture: Some(Vec::new()),
        inner: s,
    };
    let connector = TlsConnector::from(tls.material().client.clone());
    let name = ServerName::try_from("hedgerow").map_err(|e| Closed::Protocol(e.to_string()))?;
    match connector.connect(name, wire).into_fallible().await {
        Ok(mut t) => {
            t.get_mut().0.capture = None;
            Ok(Link::Tls(Box::new(t.into())))
        }
        Err((e, wire)) => {
            let kept = wire.capture.unwrap_or_default();
            if let Some(why) = plain_answer(&kept, max) {
                return Err(Closed::Protocol(why));
            }
            let why = classify(&e);
            if why != Refusal::Handshake {
                count(counters, why);
            }
            Err(Closed::Protocol(format!("tls handshake failed: {e}")))
        }
    }
}

/// What a peer that answered a TLS hello in plain hedgerow frames said.
fn plain_answer(kept: &[u8], max: u32) -> Option<String> {
    if kept
        .first()
        .is_none_or(|b| *b == TLS_HANDSHAKE || *b == 0x15)
    {
        return None;
    }
    Some(match decode_frame(kept, max) {
        Ok(Some((Frame::Refuse(why), _))) => format!("peer refused the handshake: {why}"),
        _ => "the peer does not speak TLS (its first bytes are not a TLS record); \
              is TLS off on it?"
            .to_string(),
    })
}

/// Holds the node id `claimed` in a hello to the peer's certificate;
/// `Ok` without TLS.
pub(crate) fn check_claim<S>(
    link: &Link<S>,
    tls: Option<&TlsContext>,
    counters: &Counters,
    claimed: &str,
) -> Result<(), String> {
    let (Some(tls), Some(ids)) = (tls, tls.and_then(|t| link.certified_ids(t.cluster()))) else {
        return Ok(());
    };
    if ids.iter().any(|id| id == claimed) {
        return Ok(());
    }
    count(counters, Refusal::IdMismatch);
    Err(format!(
        "the hello claims node {claimed} but the certificate names {} (cluster {})",
        ids.join(", "),
        tls.cluster()
    ))
}

/// The accepting side of the handshake driven over bytes in memory, for
/// the fuzz bodies: what a peer sent goes in, what the node answered and
/// whether it let the peer on come out. Not part of the stable API.
#[cfg(feature = "testing")]
pub(crate) fn accept_in_memory(tls: Option<&TlsContext>, input: &[u8]) -> (bool, Vec<u8>) {
    use std::future::Future as _;
    let mut s = Memory {
        input,
        output: Vec::new(),
    };
    let counters = Counters::default();
    let accepted = {
        let mut fut = std::pin::pin!(accept(tls, &counters, &mut s, 1 << 20));
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        // Nothing in memory ever waits: the first poll finishes.
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => r.is_ok(),
            Poll::Pending => panic!("the handshake waited on a stream that never blocks"),
        }
    };
    (accepted, s.output)
}

/// A stream over bytes in memory: reads `input` then the end, keeps what
/// is written.
#[cfg(feature = "testing")]
struct Memory<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

#[cfg(feature = "testing")]
impl AsyncRead for Memory<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(n))
    }
}

#[cfg(feature = "testing")]
impl AsyncWrite for Memory<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The accepting side of a node's handshake over bytes in memory, for
/// the fuzz bodies (feature `testing`; not part of the stable API).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub struct FuzzAcceptor(Option<TlsContext>);

#[cfg(feature = "testing")]
impl FuzzAcceptor {
    /// A node with TLS `tls` (as node `node` of `cluster`), or plaintext.
    pub fn new(tls: Option<(crate::tls::Tls, &str, &str)>) -> Result<Self, crate::tls::TlsError> {
        match tls {
            Some((tls, cluster, node)) => {
                Ok(FuzzAcceptor(Some(TlsContext::new(tls, cluster, node)?)))
            }
            None => Ok(FuzzAcceptor(None)),
        }
    }

    /// Feeds `input` as everything a peer sends: whether the node let it
    /// on to the hello, and what the node wrote back.
    pub fn feed(&self, input: &[u8]) -> (bool, Vec<u8>) {
        accept_in_memory(self.0.as_ref(), input)
    }
}
