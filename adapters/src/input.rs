//! The words the rest of the crate hands the driver, and the way they get
//! in: the public handles' [`Command`]s, the credit an inbound stream's
//! reader gives back ([`Consumed`]), and [`Route`], which hands an input
//! straight to the driver on the sender's thread when the driver is free
//! ([`Accept`]) and queues it on the driver's channel otherwise. The
//! transport hands its connection events in through the same [`Accept`].
//!
//! This room knows nothing of the driver (the driver implements
//! [`Accept`]), so the API and the transport can name what they send
//! without importing what receives it.

use std::sync::Arc;

use futures::channel::{mpsc, oneshot};
use hedgerow_core::{Bytes, NodeId, Payload, StreamId};

use crate::types::{Error, LeaderGuard, Reply, WatchEvent};

/// A broadcast reply as the API hands it out.
pub(crate) type BroadcastItem = (NodeId, Result<Bytes, Error>);

/// What the public handle asks the driver to do.
pub(crate) enum Command {
    Send {
        payload: Bytes,
        reply: oneshot::Sender<Result<Reply, Error>>,
    },
    Broadcast {
        payload: Bytes,
        /// Only these members (`None`: the whole view).
        to: Option<Vec<NodeId>>,
        replies: mpsc::UnboundedSender<BroadcastItem>,
    },
    Stream(StreamCommand),
    SetMeta {
        meta: Bytes,
        done: oneshot::Sender<Result<(), Error>>,
    },
    Watch(mpsc::Sender<WatchEvent>),
    Guard {
        reply: oneshot::Sender<Option<LeaderGuard>>,
    },
    Resign {
        done: oneshot::Sender<Result<(), Error>>,
    },
    Leave {
        done: oneshot::Sender<Result<(), Error>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    Coord(CoordCommand),
}

/// What the coordination handles ask of the driver.
pub(crate) enum CoordCommand {
    Put {
        key: String,
        value: Bytes,
        reply: oneshot::Sender<Result<u64, Error>>,
    },
    Acquire {
        name: String,
        limit: u32,
        wait: bool,
        timeout: std::time::Duration,
        reply: oneshot::Sender<Result<Option<Grant>, Error>>,
    },
    Release {
        ticket: hedgerow_core::RequestId,
    },
    /// Wake `done` after a while (a watcher's poll).
    Sleep {
        after: std::time::Duration,
        done: oneshot::Sender<()>,
    },
    /// A KV read, run on the store (no leader hop).
    Read {
        read: KvRead,
        reply: oneshot::Sender<Result<Vec<hedgerow_core::coord::KvEntry>, Error>>,
    },
}

pub(crate) use hedgerow_core::coord::KvRead;

/// A granted permit as the driver hands it to the caller.
pub(crate) struct Grant {
    pub(crate) ticket: hedgerow_core::RequestId,
    pub(crate) token: u64,
    /// Fires (or is dropped) when the permit is lost.
    pub(crate) lost: oneshot::Receiver<()>,
}

/// What the stream handles (and the handle opening them) ask of the
/// driver.
pub(crate) enum StreamCommand {
    /// A stream to the leader.
    Open {
        reply: oneshot::Sender<Result<StreamId, Error>>,
    },
    /// A stream to each member of the view, this node included.
    OpenBroadcast {
        reply: oneshot::Sender<Vec<(NodeId, Result<StreamId, Error>)>>,
    },
    Write {
        id: StreamId,
        data: Payload,
        done: oneshot::Sender<Result<(), Error>>,
    },
    Finish {
        id: StreamId,
        done: oneshot::Sender<Result<(), Error>>,
    },
    Reset {
        id: StreamId,
        reason: String,
    },
}

/// An inbound stream's bytes as the application reads them; `Err` carries a
/// reset reason.
pub(crate) type Chunk = Result<Bytes, String>;

/// An inbound stream chunk the application has read: credit goes back.
pub(crate) struct Consumed {
    pub(crate) from: NodeId,
    pub(crate) sid: u64,
    pub(crate) n: usize,
}

/// A running driver taking inputs of kind `T` on the sender's own thread.
/// Gives the input back when the driver is busy or stopped; the sender
/// then uses the channel.
pub(crate) trait Accept<T>: Send + Sync {
    // The input comes back to be queued; boxing it would cost an
    // allocation per frame on the path this exists to make cheap.
    #[allow(clippy::result_large_err)]
    fn accept(&self, input: T) -> Result<(), T>;

    /// Takes every input of `batch`, in order, in one turn of the driver,
    /// and leaves `batch` empty; `false`, with `batch` untouched, when the
    /// driver is busy or stopped (the sender then queues them). One turn
    /// for many inputs pays the turn's fixed costs (the lock, the flush,
    /// the next timer) once. By default it takes none.
    fn accept_all(&self, batch: &mut Vec<T>) -> bool {
        let _ = batch;
        false
    }
}

/// One kind of input's way into the driver: straight in, on the sender's
/// thread, when the driver is free (`direct`), else through the loop's
/// channel.
pub(crate) struct Route<T> {
    tx: mpsc::UnboundedSender<T>,
    direct: Option<Arc<dyn Accept<T>>>,
}

/// Where the public handles send commands.
pub(crate) type Commands = Route<Command>;
/// Where an inbound stream reports the bytes its reader consumed (so
/// credit goes back).
pub(crate) type Credit = Route<Consumed>;

impl<T> Route<T> {
    /// A route that queues on `tx` whenever `direct` (if any) is busy.
    pub(crate) fn new(tx: mpsc::UnboundedSender<T>, direct: Option<Arc<dyn Accept<T>>>) -> Self {
        Route { tx, direct }
    }

    /// Hands `x` to the driver; [`Error::Closed`] once it has stopped.
    pub(crate) fn send(&self, x: T) -> Result<(), Error> {
        let x = match &self.direct {
            Some(driver) => match driver.accept(x) {
                Ok(()) => return Ok(()),
                Err(x) => x,
            },
            None => x,
        };
        self.tx.unbounded_send(x).map_err(|_| Error::Closed)
    }
}

impl<T> Route<T> {
    /// Whether the driver stopped: its loop dropped the channel's other end.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<T> Clone for Route<T> {
    fn clone(&self) -> Self {
        Route {
            tx: self.tx.clone(),
            direct: self.direct.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Route<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Route")
    }
}
