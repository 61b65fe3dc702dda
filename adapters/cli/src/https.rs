//! The control API over TLS (`--http-tls on`): a listener for
//! `axum::serve` whose connections make their TLS handshake on their own
//! connection task, never in the accept loop, so a client that connects
//! and stalls (or sends garbage) delays nobody but itself; a handshake
//! not done within [`HANDSHAKE_LIMIT`] is dropped.
//!
//! The certificate material is the library's
//! ([`hedgerow::Tls::https_server`]: the node's certificate and key,
//! re-read when the files change); who may call which route is `auth`'s
//! business, the same over TLS as without.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hedgerow::tls::rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{Accept, TlsAcceptor};

/// How long a connection may take to finish its TLS handshake.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// A TCP listener whose connections speak TLS, for `axum::serve`.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    /// Serves `config` on the connections `tcp` accepts.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept: it waits out errors such as too many open
        // files instead of ending the server.
        let (tcp, peer) = axum::serve::Listener::accept(&mut self.tcp).await;
        let _ = tcp.set_nodelay(true);
        let conn = TlsConnection(State::Handshake {
            accept: Box::new(self.acceptor.accept(tcp)),
            limit: Box::pin(tokio::time::sleep(HANDSHAKE_LIMIT)),
            peer,
        });
        (conn, peer)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// One connection: its handshake first, driven by the first read or
/// write (on the connection's own task), then the TLS stream.
pub struct TlsConnection(State);

enum State {
    Handshake {
        accept: Box<Accept<TcpStream>>,
        limit: Pin<Box<tokio::time::Sleep>>,
        peer: SocketAddr,
    },
    Ready(Box<TlsStream<TcpStream>>),
    Failed,
}

impl TlsConnection {
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut TlsStream<TcpStream>>> {
        if let State::Handshake {
            accept,
            limit,
            peer,
        } = &mut self.0
        {
            let done = match Pin::new(&mut **accept).poll(cx) {
                Poll::Ready(done) => done,
                Poll::Pending if limit.as_mut().poll(cx).is_ready() => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS handshake within {HANDSHAKE_LIMIT:?}"),
                )),
                Poll::Pending => return Poll::Pending,
            };
            match done {
                Ok(stream) => self.0 = State::Ready(Box::new(stream)),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "control API: TLS handshake failed");
                    self.0 = State::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match &mut self.0 {
            State::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_stream(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_stream(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_stream(cx))?;
        Pin::new(stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            State::Ready(stream) => stream.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            State::Ready(stream) => Pin::new(stream).poll_flush(cx),
            // Nothing written yet to flush.
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            State::Ready(stream) => Pin::new(stream).poll_shutdown(cx),
            // Dropping the half-made connection closes it.
            _ => Poll::Ready(Ok(())),
        }
    }
}
