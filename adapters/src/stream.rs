//! The stream handles the application holds: an [`IncomingStream`] it
//! reads (giving credit back chunk by chunk), and the [`SendStream`] and
//! [`BroadcastStream`] it writes (each write a command to the driver). What
//! the driver does with the bytes, the flow control and the resets, is the
//! driver's `streams` book; this room only turns calls into inputs and
//! answers into results.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::{mpsc, oneshot};
use futures::Stream;
use hedgerow_core::wire::StreamKind;
use hedgerow_core::{Bytes, NodeId, Payload, StreamId};

use crate::input::{Chunk, Command, Commands, Consumed, Credit, StreamCommand};
use crate::types::Error;

/// A stream opened to this node: to the leader
/// ([`Hedgerow::send_stream`](crate::Hedgerow::send_stream)) or to every
/// member ([`Hedgerow::broadcast_stream`](crate::Hedgerow::broadcast_stream)).
/// Read it as a [`Stream`] of chunks ([`Bytes`]: slices of the frames they
/// arrived in, not copies), in order; each chunk read grants the sender
/// more credit, so a slow reader slows the sender and memory stays bounded
/// by the stream window. It ends after the last chunk, or with an
/// [`Error::StreamReset`] item if the sender gave up.
#[derive(Debug)]
pub struct IncomingStream {
    from: NodeId,
    sid: u64,
    kind: StreamKind,
    rx: mpsc::UnboundedReceiver<Chunk>,
    consumed: Credit,
}

impl IncomingStream {
    pub(crate) fn new(
        from: NodeId,
        sid: u64,
        kind: StreamKind,
        rx: mpsc::UnboundedReceiver<Chunk>,
        consumed: Credit,
    ) -> Self {
        IncomingStream {
            from,
            sid,
            kind,
            rx,
            consumed,
        }
    }

    /// The sender.
    pub fn from(&self) -> &NodeId {
        &self.from
    }

    /// The sender's stream id.
    pub fn id(&self) -> u64 {
        self.sid
    }

    /// Whether it was sent to the leader (`true`) or to every member.
    pub fn to_leader(&self) -> bool {
        self.kind == StreamKind::ToLeader
    }
}

impl Stream for IncomingStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.rx).poll_next(cx) {
            Poll::Ready(Some(Ok(data))) => {
                let c = Consumed {
                    from: self.from.clone(),
                    sid: self.sid,
                    n: data.len(),
                };
                // A stopped node needs no credit back.
                let _ = self.consumed.send(c);
                Poll::Ready(Some(Ok(data)))
            }
            Poll::Ready(Some(Err(why))) => Poll::Ready(Some(Err(Error::StreamReset(why)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A stream this node sends: to the leader
/// ([`Hedgerow::send_stream`](crate::Hedgerow::send_stream)) or one leg of
/// [`Hedgerow::broadcast_stream`](crate::Hedgerow::broadcast_stream). Bytes
/// arrive in order; [`SendStream::write_all`] waits while the receiver is
/// behind (credit flow control), and [`SendStream::finish`] completes once
/// everything was sent. Dropping it unfinished resets the stream.
#[derive(Debug)]
pub struct SendStream {
    id: StreamId,
    to: Option<NodeId>,
    commands: Commands,
    done: bool,
}

impl SendStream {
    /// The stream the driver opened as `id`, to member `to` (`None`: to the
    /// leader).
    pub(crate) fn new(id: StreamId, to: Option<NodeId>, commands: Commands) -> Self {
        SendStream {
            id,
            to,
            commands,
            done: false,
        }
    }

    /// Queues `data`, waiting while the send buffer is full. An owned
    /// `Vec<u8>` or [`Bytes`] is sent without being copied (copy a
    /// borrowed slice with `Bytes::copy_from_slice`).
    pub async fn write_all(&mut self, data: impl Into<Bytes>) -> Result<(), Error> {
        let (done, rx) = oneshot::channel();
        let cmd = Command::Stream(StreamCommand::Write {
            id: self.id,
            data: Payload::from(data.into()),
            done,
        });
        self.commands.send(cmd)?;
        let mut rx = rx;
        let r = match futures::FutureExt::now_or_never(&mut rx) {
            // Taken at once (the driver ran on this task): yield once, so
            // a writer with credit to spare does not keep the connection's
            // task (or the receiver's) from running on this worker.
            Some(r) => {
                crate::runtime::yield_once().await;
                r
            }
            None => rx.await,
        };
        r.map_err(|_| Error::Closed)?
    }

    /// Ends the stream and waits until every byte and the end were sent.
    pub async fn finish(mut self) -> Result<(), Error> {
        self.done = true;
        let (done, rx) = oneshot::channel();
        self.commands
            .send(Command::Stream(StreamCommand::Finish { id: self.id, done }))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Abandons the stream; the receiver sees [`Error::StreamReset`].
    pub fn reset(mut self, reason: &str) {
        self.done = true;
        let _ = self.commands.send(Command::Stream(StreamCommand::Reset {
            id: self.id,
            reason: reason.into(),
        }));
    }

    /// The member this leg goes to (`None` for a stream to the leader).
    pub fn to(&self) -> Option<&NodeId> {
        self.to.as_ref()
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.send(Command::Stream(StreamCommand::Reset {
                id: self.id,
                reason: "the sender dropped the stream unfinished".into(),
            }));
        }
    }
}

/// A stream to every member of the view (this node included): one
/// [`SendStream`] leg per member, written together.
#[derive(Debug)]
pub struct BroadcastStream {
    legs: Vec<SendStream>,
    failed: Vec<(NodeId, Error)>,
}

impl BroadcastStream {
    /// The legs that opened, and the members whose leg did not.
    pub(crate) fn new(legs: Vec<SendStream>, failed: Vec<(NodeId, Error)>) -> Self {
        BroadcastStream { legs, failed }
    }

    /// Writes `data` to every leg still alive, at the pace of the slowest;
    /// a leg that fails is dropped and reported by [`BroadcastStream::finish`].
    pub async fn write_all(&mut self, data: impl Into<Bytes>) -> Result<(), Error> {
        // One buffer, shared by every leg.
        let data: Bytes = data.into();
        let results =
            futures::future::join_all(self.legs.iter_mut().map(|l| l.write_all(data.clone())))
                .await;
        let mut keep = Vec::new();
        for (leg, r) in std::mem::take(&mut self.legs).into_iter().zip(results) {
            match r {
                Ok(()) => keep.push(leg),
                Err(Error::Closed) => return Err(Error::Closed),
                Err(e) => {
                    let id = leg.to().cloned();
                    leg.reset("write failed");
                    if let Some(id) = id {
                        self.failed.push((id, e));
                    }
                }
            }
        }
        self.legs = keep;
        Ok(())
    }

    /// Ends every leg; one result per member.
    pub async fn finish(self) -> Vec<(NodeId, Result<(), Error>)> {
        let mut out: Vec<(NodeId, Result<(), Error>)> = self
            .failed
            .into_iter()
            .map(|(id, e)| (id, Err(e)))
            .collect();
        let finishing = self.legs.into_iter().map(|l| {
            let id = l.to().cloned();
            async move { (id, l.finish().await) }
        });
        for (id, r) in futures::future::join_all(finishing).await {
            if let Some(id) = id {
                out.push((id, r));
            }
        }
        out
    }

    /// The members this stream goes to.
    pub fn members(&self) -> impl Iterator<Item = &NodeId> {
        self.legs.iter().filter_map(|l| l.to())
    }
}
