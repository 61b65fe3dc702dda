//! hedge's coordination services on a running node: the append-only
//! key/value store ([`Kv`]), semaphores and locks ([`Semaphore`],
//! [`Permit`]). Writes go to the leader, which fences each one by its lease
//! in the store's own transaction; reads go straight to the store from any
//! node. The rules are the core's (`hedgerow_core::coord`); these handles
//! hand calls to the driver and wait.
//!
//! ```
//! # #[cfg(feature = "tokio")] {
//! # use hedgerow::{Config, Hedgerow, store::MemoryStore};
//! # use std::time::Duration;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! # let node = Hedgerow::builder("docs", "a", "127.0.0.1:0")
//! #     .store(MemoryStore::new())
//! #     .clock(hedgerow_clock::SystemClock::new(Duration::from_millis(5)))
//! #     .config(|c| { *c = Config::local("docs"); c.lead_on_assumed_clock = true; })
//! #     .start().await?;
//! # node.wait_for_leader(Duration::from_secs(5)).await?;
//! // Append-only KV: a put adds a revision, reads need no leader.
//! let rev = node.kv().put("config/mode", "blue").await?;
//! assert_eq!(&node.kv().get("config/mode").await?.unwrap().value[..], b"blue");
//! assert_eq!(node.kv().get_at("config/mode", rev).await?.unwrap().revision, rev);
//!
//! // A lock: its token is a fencing token that rises with every holder.
//! let lock = node.lock("nightly-report").acquire().await?;
//! assert!(lock.is_valid());
//! let token = lock.token(); // pass it to what you write, so stale holders are refused
//! lock.release();
//!
//! // A semaphore of 3 permits.
//! let pool = node.semaphore("db-migrations", 3);
//! let permit = pool.try_acquire().await?.expect("a free permit");
//! # let _ = (token, permit);
//! # node.shutdown().await;
//! # Ok::<(), hedgerow::Error>(())
//! # }).unwrap();
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use futures::Stream;
pub use hedgerow_core::coord::CoordRefusal;
use hedgerow_core::coord::KvEntry as CoreEntry;
use hedgerow_core::{Bytes, NodeId, RequestId, Term};

use crate::api::Hedgerow;
use crate::input::{Command, CoordCommand, KvRead};
use crate::types::Error;

/// One revision of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// The revision: global to the group, strictly increasing in commit
    /// order.
    pub revision: u64,
    /// The value.
    pub value: Bytes,
    /// The leader's term that committed it.
    pub term: Term,
    /// The node whose `put` it was.
    pub written_by: NodeId,
}

impl From<CoreEntry> for KvEntry {
    fn from(e: CoreEntry) -> Self {
        KvEntry {
            key: e.key,
            revision: e.revision,
            value: e.value.into_bytes(),
            term: e.term,
            written_by: e.origin.node,
        }
    }
}

/// The group's append-only key/value store; see [`Hedgerow::kv`].
#[derive(Clone, Debug)]
pub struct Kv {
    node: Hedgerow,
}

impl Kv {
    /// Appends `value` as a new revision of `key` through the leader and
    /// returns the revision. At most once: retried (same id) across
    /// failovers until the request timeout, and the store recognises a
    /// retry. [`Error::Timeout`] means it may or may not have been
    /// committed (read it back with [`Kv::history`] to know); never a false
    /// `Ok`. Keys are 1 to 512 bytes, values at most 256 KiB
    /// ([`Error::Coord`] otherwise, nothing sent).
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<u64, Error> {
        let (reply, rx) = oneshot::channel();
        self.node.command(Command::Coord(CoordCommand::Put {
            key: key.into(),
            value: value.into(),
            reply,
        }))?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn read(&self, read: KvRead) -> Result<Vec<KvEntry>, Error> {
        let (reply, rx) = oneshot::channel();
        self.node
            .command(Command::Coord(CoordCommand::Read { read, reply }))?;
        let entries = rx.await.map_err(|_| Error::Closed)??;
        Ok(entries.into_iter().map(KvEntry::from).collect())
    }

    /// The latest revision of `key`, read from the store.
    pub async fn get(&self, key: &str) -> Result<Option<KvEntry>, Error> {
        Ok(self.read(KvRead::Get(key.into())).await?.pop())
    }

    /// Revision `revision` of `key` (`None` if that revision is not of
    /// this key).
    pub async fn get_at(&self, key: &str, revision: u64) -> Result<Option<KvEntry>, Error> {
        Ok(self.read(KvRead::GetAt(key.into(), revision)).await?.pop())
    }

    /// Every revision of `key`, oldest first.
    pub async fn history(&self, key: &str) -> Result<Vec<KvEntry>, Error> {
        self.read(KvRead::History(key.into())).await
    }

    /// The latest revision of every key starting with `prefix`, by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<KvEntry>, Error> {
        self.read(KvRead::List(prefix.into())).await
    }

    /// Revisions after `after` of keys starting with `prefix`, oldest first
    /// (at most `limit`): how a watcher catches up.
    pub async fn changes(
        &self,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<KvEntry>, Error> {
        self.read(KvRead::Changes(prefix.into(), after, limit))
            .await
    }

    /// Every change to keys starting with `prefix` committed after this
    /// call returns, in revision order, none skipped: the watcher reads the
    /// log from the store by revision, so one that falls behind catches up.
    /// New revisions show within `poll` (it reads again at once after each
    /// batch). The stream ends with an error item if the store fails, and
    /// ends when the node shuts down.
    pub async fn watch(
        &self,
        prefix: &str,
        poll: Duration,
    ) -> Result<impl Stream<Item = Result<KvEntry, Error>>, Error> {
        let head = self.list(prefix).await?;
        Ok(self.watch_from(
            prefix,
            head.iter().map(|e| e.revision).max().unwrap_or(0),
            poll,
        ))
    }

    /// As [`Kv::watch`], from the revision after `after` (0: the whole
    /// history), e.g. to resume a watch where it stopped.
    pub fn watch_from(
        &self,
        prefix: &str,
        after: u64,
        poll: Duration,
    ) -> impl Stream<Item = Result<KvEntry, Error>> {
        let start = Watcher {
            kv: self.clone(),
            prefix: prefix.into(),
            after,
            buffer: VecDeque::new(),
            poll,
            done: false,
        };
        futures::stream::unfold(start, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        })
    }
}

struct Watcher {
    kv: Kv,
    prefix: String,
    /// The last revision handed out.
    after: u64,
    buffer: VecDeque<KvEntry>,
    poll: Duration,
    done: bool,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<KvEntry, Error>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.after = e.revision;
                return Some(Ok(e));
            }
            let after = self.after;
            match self.kv.changes(&self.prefix, after, 256).await {
                Ok(batch) if !batch.is_empty() => self.buffer.extend(batch),
                Ok(_) => {
                    let (done, rx) = oneshot::channel();
                    let sleep = CoordCommand::Sleep {
                        after: self.poll,
                        done,
                    };
                    if self.kv.node.command(Command::Coord(sleep)).is_err() || rx.await.is_err() {
                        self.done = true;
                        return None;
                    }
                }
                Err(Error::Closed) => {
                    self.done = true;
                    return None;
                }
                Err(e) => return Some(self.fail(e)),
            }
        }
    }

    fn fail(&mut self, e: Error) -> Result<KvEntry, Error> {
        self.done = true;
        Err(e)
    }
}

/// A named semaphore of the group; see [`Hedgerow::semaphore`] and
/// [`Hedgerow::lock`].
#[derive(Clone, Debug)]
pub struct Semaphore {
    node: Hedgerow,
    name: String,
    limit: u32,
}

impl Semaphore {
    async fn ask(&self, wait: bool, timeout: Duration) -> Result<Option<Permit>, Error> {
        let (reply, rx) = oneshot::channel();
        self.node.command(Command::Coord(CoordCommand::Acquire {
            name: self.name.clone(),
            limit: self.limit,
            wait,
            timeout,
            reply,
        }))?;
        // Dropping this future drops `rx`: a grant that arrives later is
        // given back by the driver, and a wait still queued times out.
        let grant = rx.await.map_err(|_| Error::Closed)??;
        Ok(grant.map(|g| Permit {
            node: self.node.clone(),
            name: self.name.clone(),
            ticket: g.ticket,
            token: g.token,
            lost: g.lost.map(gone as fn(_)).shared(),
            released: false,
        }))
    }

    /// Waits for a permit (FIFO among waiters at the leader), however
    /// long. Cancel by dropping the future.
    pub async fn acquire(&self) -> Result<Permit, Error> {
        // Retried at the leader with the same ticket, so the place in the
        // queue survives retries; a century is "no deadline".
        let forever = Duration::from_secs(100 * 365 * 24 * 3600);
        self.ask(true, forever).await?.ok_or(Error::Timeout)
    }

    /// A permit if one is free now; `None` if all are held.
    pub async fn try_acquire(&self) -> Result<Option<Permit>, Error> {
        self.ask(false, Duration::from_secs(5)).await
    }

    /// Waits for a permit for at most `limit`; [`Error::Timeout`] after.
    pub async fn acquire_timeout(&self, limit: Duration) -> Result<Permit, Error> {
        self.ask(true, limit).await?.ok_or(Error::Timeout)
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// The lost signal resolves either way: sent (lost) or dropped (the
/// driver stopped, which loses it too).
fn gone(_: Result<(), oneshot::Canceled>) {}

type Lost = Shared<futures::future::Map<oneshot::Receiver<()>, fn(Result<(), oneshot::Canceled>)>>;

/// A permit of a semaphore, or a lock. It is valid only while
/// [`Permit::is_valid`] says so, from a fresh clock reading: a process
/// paused past its permit's lease answers `false` the moment it resumes,
/// and another holder may have it by then. Check before each act that
/// needs it, and hand [`Permit::token`] (a fencing token, rising with
/// every grant of the name) to what you write, so that a store can refuse
/// a stale holder. Dropping it releases it.
pub struct Permit {
    node: Hedgerow,
    name: String,
    ticket: RequestId,
    token: u64,
    lost: Lost,
    released: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("name", &self.name)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// The token: strictly increasing per name, a lock's fencing token.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The semaphore's or lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this permit is held now (fresh clock reading against the
    /// expiry the leader promised); `false` when the clock cannot be read.
    pub fn is_valid(&self) -> bool {
        self.node
            .at_now(|node, now| node.permit_valid(now, self.ticket))
            .unwrap_or(false)
    }

    /// Until when (Unix ns, ClockBound time) the leader promised it, as of
    /// its last renewal; `None` once it is gone.
    pub fn valid_until(&self) -> Option<u64> {
        self.node
            .at_now(|node, _| node.permit(self.ticket).map(|p| p.expires_ns))
            .ok()
            .flatten()
    }

    /// Resolves when the permit is gone: it lapsed (no renewal in time:
    /// the leader is unreachable or this process was paused), the node
    /// left or shut down. After that another node may hold it.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.lost.clone()
    }

    /// Gives the permit back now.
    pub fn release(mut self) {
        self.give_back();
    }

    fn give_back(&mut self) {
        if !self.released {
            self.released = true;
            let _ = self.node.command(Command::Coord(CoordCommand::Release {
                ticket: self.ticket,
            }));
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl Hedgerow {
    /// The group's append-only key/value store.
    pub fn kv(&self) -> Kv {
        Kv { node: self.clone() }
    }

    /// The semaphore `name` of `limit` permits (1 or more). Every user of
    /// one name must ask for the same limit while any permit is held; a
    /// different one is refused with [`Error::Coord`] ([`CoordRefusal::LimitConflict`]).
    pub fn semaphore(&self, name: &str, limit: u32) -> Semaphore {
        Semaphore {
            node: self.clone(),
            name: name.into(),
            limit,
        }
    }

    /// The lock `name`: a semaphore of one permit, whose token is a fencing
    /// token.
    pub fn lock(&self, name: &str) -> Semaphore {
        self.semaphore(name, 1)
    }
}
