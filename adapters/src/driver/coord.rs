//! The callers of the coordination services waiting on the cluster: each
//! put's and acquire's answer by the core's id, and each granted permit's
//! "lost" signal by ticket; KV reads run on the store off the driver. A
//! grant whose caller stopped waiting is given back at once.

use std::collections::BTreeMap;

use futures::channel::oneshot;
use hedgerow_core::coord::{CoordAnswer, CoordRefusal};
use hedgerow_core::{Now, RequestId, SendError};

use super::Driver;
use crate::input::{CoordCommand, Grant};
use crate::runtime::Runtime;
use crate::types::Error;

type PutReply = oneshot::Sender<Result<u64, Error>>;
type AcquireReply = oneshot::Sender<Result<Option<Grant>, Error>>;

// Ordered maps, as in `replies`: a fixed wake order keeps simulated runs
// replayable.
#[derive(Default)]
pub(super) struct CoordBook {
    puts: BTreeMap<u64, PutReply>,
    acquires: BTreeMap<u64, AcquireReply>,
    /// Granted permits: dropping the sender tells the holder it is lost.
    held: BTreeMap<u64, oneshot::Sender<()>>,
}

fn refused(r: CoordRefusal) -> Error {
    Error::Coord(r)
}

/// The `outcome` label of a put that ended in `r` (the kinds of error
/// the `hedgerow` command's HTTP API names, too).
fn put_outcome(r: &Result<u64, Error>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(Error::NoLeader | Error::NoLeaderWithin { .. }) => "no_leader",
        Err(Error::Timeout) => "timeout",
        Err(Error::Overloaded) => "overloaded",
        Err(Error::Coord(CoordRefusal::Invalid(_))) => "invalid",
        Err(Error::Coord(CoordRefusal::LimitConflict { .. }) | Error::Refused(_)) => "refused",
        Err(Error::Coord(_) | Error::Store(_)) => "store",
        Err(_) => "failed",
    }
}

impl<R: Runtime> Driver<R> {
    pub(super) fn on_coord_command(&mut self, now: Now, c: CoordCommand) {
        match c {
            CoordCommand::Put { key, value, reply } => {
                match self.core.node().kv_put(now, &key, value) {
                    Ok(id) => {
                        self.coord.puts.insert(id.0, reply);
                    }
                    Err(r) => {
                        let r = Err(refused(r));
                        self.calls.kv_put(put_outcome(&r));
                        let _ = reply.send(r);
                    }
                }
            }
            CoordCommand::Acquire {
                name,
                limit,
                wait,
                timeout,
                reply,
            } => match self.core.node().acquire(now, &name, limit, wait, timeout) {
                Ok(id) => {
                    self.coord.acquires.insert(id.0, reply);
                }
                Err(r) => {
                    let _ = reply.send(Err(refused(r)));
                }
            },
            CoordCommand::Release { ticket } => {
                self.coord.held.remove(&ticket.0);
                self.coord.acquires.remove(&ticket.0);
                self.core.node().release(now, ticket);
            }
            CoordCommand::Read { read, reply } => self.lease.read_kv(&self.rt, read, reply),
            CoordCommand::Sleep { after, done } => {
                let sleep = self.rt.sleep(after);
                self.rt.spawn(Box::pin(async move {
                    sleep.await;
                    let _ = done.send(());
                }));
            }
        }
    }

    /// A coordination call finished.
    pub(super) fn coord_done(&mut self, id: RequestId, result: Result<CoordAnswer, SendError>) {
        if let Some(reply) = self.coord.puts.remove(&id.0) {
            let r = match result {
                Ok(CoordAnswer::Put { revision }) => Ok(revision),
                Ok(CoordAnswer::Refused(r)) => Err(refused(r)),
                Ok(other) => Err(Error::Refused(format!(
                    "unexpected answer to a put: {other:?}"
                ))),
                Err(e) => Err(Error::from_send(e)),
            };
            self.calls.kv_put(put_outcome(&r));
            let _ = reply.send(r);
            return;
        }
        let Some(reply) = self.coord.acquires.remove(&id.0) else {
            return;
        };
        let r = match result {
            Ok(CoordAnswer::Granted { token, .. }) => {
                let (tx, lost) = oneshot::channel();
                let grant = Grant {
                    ticket: id,
                    token,
                    lost,
                };
                match reply.send(Ok(Some(grant))) {
                    Ok(()) => {
                        self.coord.held.insert(id.0, tx);
                    }
                    // Nobody waits for it any more: give it back.
                    Err(_) => {
                        let now = self.now();
                        self.core.node().release(now, id);
                    }
                }
                return;
            }
            Ok(CoordAnswer::Busy) => Ok(None),
            Ok(CoordAnswer::Refused(r)) => Err(refused(r)),
            Ok(other) => Err(Error::Refused(format!(
                "unexpected answer to an acquire: {other:?}"
            ))),
            Err(e) => Err(Error::from_send(e)),
        };
        let _ = reply.send(r);
    }

    /// A permit lapsed or was given up: its holder hears of it.
    pub(super) fn permit_lost(&mut self, ticket: RequestId) {
        if let Some(tx) = self.coord.held.remove(&ticket.0) {
            let _ = tx.send(());
        }
    }
}
