//! The one seam between the driver and an async runtime: spawning tasks,
//! timers, the blocking pool and TCP. The driver and the transport are
//! written once against [`Runtime`]; each runtime is a thin file behind its
//! feature (`tokio`, `smol`, `async-std`), and smol and async-std share the
//! async-io implementation of the network, timers and blocking pool. A test
//! runtime (e.g. a turmoil simulation) plugs in by implementing the same
//! trait with its own stream type.
//!
//! This module must never hold protocol logic: it only moves bytes and
//! wakes tasks up.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncWrite};

#[cfg(feature = "async-io-runtime")]
mod async_io;
#[cfg(feature = "async-std")]
mod async_std;
#[cfg(feature = "smol")]
mod smol;
#[cfg(feature = "tokio")]
mod tokio;

#[cfg(feature = "async-std")]
pub use self::async_std::AsyncStdRuntime;
#[cfg(feature = "smol")]
pub use self::smol::SmolRuntime;
#[cfg(feature = "tokio")]
pub use self::tokio::TokioRuntime;
// Named only as `TokioRuntime`'s stream type; not for direct use.
#[cfg(feature = "tokio")]
#[doc(hidden)]
pub use self::tokio::TokioTcpStream;

/// A boxed, sendable future, as the runtime trait hands them around.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What hedgerow needs from an async runtime.
///
/// Implementations are cheap handles (`Clone`); every method may be called
/// from any task of the runtime. Streams are used through the `futures`
/// I/O traits, the common denominator of the runtimes.
///
/// ```
/// # #[cfg(feature = "tokio")] {
/// use hedgerow::runtime::{Runtime, TokioRuntime};
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// rt.block_on(async {
///     let hr = TokioRuntime::from_context().unwrap();
///     let listener = hr.bind("127.0.0.1:0".into()).await.unwrap();
///     assert!(TokioRuntime::local_addr(&listener).unwrap().port() > 0);
/// });
/// # }
/// ```
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected TCP stream (TCP_NODELAY set).
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A bound TCP listener.
    type Listener: Send + Sync + 'static;

    /// The runtime the caller runs on, if it can be found (tokio: the
    /// current runtime handle; smol and async-std: their global executor).
    fn from_context() -> Option<Self>;

    /// Runs `task` in the background until it completes.
    fn spawn(&self, task: BoxFuture<'static, ()>);

    /// Runs blocking `work` on the runtime's blocking pool, never on an
    /// async worker; results go back through a channel the closure owns.
    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>);

    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;

    /// The runtime's idea of now (a simulated runtime may pause time).
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// Binds a listener to `addr` (`host:port`).
    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Listener>>;

    /// The address a listener is bound to.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Waits for the next inbound connection.
    fn accept<'a>(
        &self,
        listener: &'a Self::Listener,
    ) -> BoxFuture<'a, io::Result<(Self::Stream, SocketAddr)>>;

    /// Connects to `addr` (`host:port`, resolved if need be).
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Stream>>;
}

/// The runtime [`crate::Hedgerow::builder`] uses: tokio when its feature is
/// on, else smol, else async-std.
#[cfg(feature = "tokio")]
pub type DefaultRuntime = TokioRuntime;
/// The runtime [`crate::Hedgerow::builder`] uses: tokio when its feature is
/// on, else smol, else async-std.
#[cfg(all(not(feature = "tokio"), feature = "smol"))]
pub type DefaultRuntime = SmolRuntime;
/// The runtime [`crate::Hedgerow::builder`] uses: tokio when its feature is
/// on, else smol, else async-std.
#[cfg(all(not(feature = "tokio"), not(feature = "smol"), feature = "async-std"))]
pub type DefaultRuntime = AsyncStdRuntime;

/// Runs `fut` on `rt`, giving up after `limit`.
pub(crate) async fn timeout<R: Runtime, T>(
    rt: &R,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    use futures::future::{select, Either};
    let fut = std::pin::pin!(fut);
    match select(fut, rt.sleep(limit)).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(((), _)) => None,
    }
}

/// Returns `Pending` once, waking itself at once: the runtime runs other
/// ready tasks (on tokio, the one a wake put in this worker's LIFO slot,
/// which no other worker may steal) before this one goes on.
pub(crate) async fn yield_once() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}
