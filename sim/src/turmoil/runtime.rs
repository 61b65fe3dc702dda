//! The facade's [`Runtime`] over turmoil: tasks on the simulated host's
//! local task set, tokio's paused timers (turmoil's simulated time), and
//! turmoil's TCP, seen through the `futures` I/O traits by a small adapter
//! that also counts the bytes a node writes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncWrite};
use hedgerow::runtime::{BoxFuture, Runtime};
use tokio::io::{AsyncRead as _, AsyncWrite as _, ReadBuf};

/// A hedgerow runtime inside one turmoil host. Create it inside the host's
/// software (the tasks it spawns belong to that host and die when the host
/// is crashed or bounced).
///
/// * `spawn` puts the task on the host's local task set (turmoil runs every
///   host on one thread, so nothing here is parallel, and the run replays
///   exactly from its seed).
/// * `spawn_blocking` runs the work inline on a task of the host: there are
///   no real threads in a simulation. Use an
///   [`AsyncLeaseStore`](hedgerow::store::AsyncLeaseStore) (as
///   [`super::store::StoreClient`] is) so that no store call ever blocks.
/// * `now` is tokio's paused clock, which turmoil advances.
#[derive(Clone, Debug, Default)]
pub struct TurmoilRuntime {
    bytes: Arc<AtomicU64>,
}

impl TurmoilRuntime {
    /// A runtime whose streams add every byte they write to `bytes`.
    pub fn new(bytes: Arc<AtomicU64>) -> Self {
        TurmoilRuntime { bytes }
    }

    /// Bytes written on this runtime's connections so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A turmoil TCP stream through the `futures` I/O traits, counting the
/// bytes written.
#[derive(Debug)]
pub struct SimStream {
    inner: turmoil::net::TcpStream,
    bytes: Arc<AtomicU64>,
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.bytes.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Runtime for TurmoilRuntime {
    type Stream = SimStream;
    type Listener = turmoil::net::TcpListener;

    fn from_context() -> Option<Self> {
        turmoil::in_simulation().then(TurmoilRuntime::default)
    }

    fn spawn(&self, task: BoxFuture<'static, ()>) {
        drop(tokio::task::spawn_local(task));
    }

    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        drop(tokio::task::spawn_local(async move { work() }));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move { tokio::time::sleep(duration).await })
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Listener>> {
        Box::pin(async move { turmoil::net::TcpListener::bind(addr).await })
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn accept<'a>(
        &self,
        listener: &'a Self::Listener,
    ) -> BoxFuture<'a, io::Result<(Self::Stream, SocketAddr)>> {
        let bytes = self.bytes.clone();
        Box::pin(async move {
            let (inner, from) = listener.accept().await?;
            Ok((SimStream { inner, bytes }, from))
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Stream>> {
        let bytes = self.bytes.clone();
        Box::pin(async move {
            let inner = turmoil::net::TcpStream::connect(addr).await?;
            Ok(SimStream { inner, bytes })
        })
    }
}
