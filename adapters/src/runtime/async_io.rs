//! The async-io path shared by smol and async-std: `Async<TcpStream>` for
//! the network, `async_io::Timer` for timers and the `blocking` pool for
//! blocking work. The per-runtime files only add how to spawn a task.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use async_io::{Async, Timer};

use super::BoxFuture;

pub(super) type Stream = Async<TcpStream>;
pub(super) type Listener = Async<TcpListener>;

pub(super) fn spawn_blocking(work: Box<dyn FnOnce() + Send + 'static>) {
    blocking::unblock(work).detach();
}

pub(super) fn sleep(duration: Duration) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        Timer::after(duration).await;
    })
}

async fn resolve(addr: String) -> io::Result<SocketAddr> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    // Name resolution blocks: keep it off the async workers.
    blocking::unblock(move || {
        addr.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{addr} resolves to no address"),
            )
        })
    })
    .await
}

pub(super) fn bind(addr: String) -> BoxFuture<'static, io::Result<Listener>> {
    Box::pin(async move { Async::<TcpListener>::bind(resolve(addr).await?) })
}

pub(super) fn local_addr(listener: &Listener) -> io::Result<SocketAddr> {
    listener.get_ref().local_addr()
}

pub(super) fn accept(listener: &Listener) -> BoxFuture<'_, io::Result<(Stream, SocketAddr)>> {
    Box::pin(async move {
        let (s, a) = listener.accept().await?;
        s.get_ref().set_nodelay(true)?;
        Ok((s, a))
    })
}

pub(super) fn connect(addr: String) -> BoxFuture<'static, io::Result<Stream>> {
    Box::pin(async move {
        let s = Async::<TcpStream>::connect(resolve(addr).await?).await?;
        s.get_ref().set_nodelay(true)?;
        Ok(s)
    })
}

/// Implements [`super::Runtime`] for a unit struct over the async-io path,
/// given how that runtime spawns a task.
macro_rules! async_io_runtime {
    ($ty:ty, |$task:ident| $spawn:expr) => {
        impl $crate::runtime::Runtime for $ty {
            type Stream = super::async_io::Stream;
            type Listener = super::async_io::Listener;

            fn from_context() -> Option<Self> {
                Some(Self)
            }

            fn spawn(&self, $task: $crate::runtime::BoxFuture<'static, ()>) {
                $spawn
            }

            fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
                super::async_io::spawn_blocking(work)
            }

            fn sleep(
                &self,
                duration: std::time::Duration,
            ) -> $crate::runtime::BoxFuture<'static, ()> {
                super::async_io::sleep(duration)
            }

            fn bind(
                &self,
                addr: String,
            ) -> $crate::runtime::BoxFuture<'static, std::io::Result<Self::Listener>> {
                super::async_io::bind(addr)
            }

            fn local_addr(listener: &Self::Listener) -> std::io::Result<std::net::SocketAddr> {
                super::async_io::local_addr(listener)
            }

            fn accept<'a>(
                &self,
                listener: &'a Self::Listener,
            ) -> $crate::runtime::BoxFuture<
                'a,
                std::io::Result<(Self::Stream, std::net::SocketAddr)>,
            > {
                super::async_io::accept(listener)
            }

            fn connect(
                &self,
                addr: String,
            ) -> $crate::runtime::BoxFuture<'static, std::io::Result<Self::Stream>> {
                super::async_io::connect(addr)
            }
        }
    };
}
pub(super) use async_io_runtime;
