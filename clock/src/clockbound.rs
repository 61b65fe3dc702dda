//! The ClockBound reader: opens a v1 or v2 shared-memory segment, copies
//! its record through the seqlock, and turns it into a [`Now`] the way the
//! official 2.0.3 client does (drift growth since `as_of`, the 5 s
//! staleness rule, `void_after`, the causality check).
//!
//! This module owns the segment layouts and the rules that turn a record
//! into a reading. It must never write to the segment, never read mapped
//! memory other than through [`crate::shm`]'s atomics and
//! [`crate::seqlock::read_consistent`], and never report a status better
//! than the record justifies.
//!
//! Layouts (native endian; offsets in bytes):
//!
//! | | v1 (`shm`, ClockBound 1.x) | v2 (`shm0`, ClockBound 2.x) |
//! |---|---|---|
//! | header | magic `0x414D5A4E 0x43420200`, segsize u32, version u16 = 1, generation u16 | same, version = 2 |
//! | `as_of` timespec | 16 | 16 |
//! | `void_after` timespec | 32 | 32 |
//! | `bound_nsec` i64 | 48 | 48 |
//! | `disruption_marker` u64 | — | 56 |
//! | `max_drift_ppb` u32 | 56 | 64 |
//! | reserved u32 | 60 | — |
//! | `clock_status` i32 | 64 | 68 |
//! | disruption support (bool) | — | 72 |
//! | segment size | 72 | 80 |
//!
//! A daemon that truncates the file while it is mapped (ClockBound's writer
//! recreates a segment it finds invalid) makes the mapping's pages vanish;
//! like the official client, this reader cannot guard against that.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use hedgerow_core::{ClockReading, ClockSource, ClockStatus, MonoTime, Now, TimeInterval};

use crate::seqlock::{self, SeqReadError, SeqWords};
use crate::shm::{self, Mapping};
use crate::{Clock, ClockError};

/// Where ClockBound 2.x publishes its v2 segment.
pub const DEFAULT_V2_PATH: &str = "/var/run/clockbound/shm0";
/// Where ClockBound 1.x publishes its v1 segment.
pub const DEFAULT_V1_PATH: &str = "/var/run/clockbound/shm";

const MAGIC: [u32; 2] = [0x414D_5A4E, 0x4342_0200];
const HEADER_LEN: usize = 16;
const SEGSIZE_OFFSET: usize = 8;
const VERSION_OFFSET: usize = 12;
const GENERATION_OFFSET: usize = 14;
/// Largest record, in 8-byte words (v2: 64 bytes).
const MAX_RECORD_WORDS: usize = 8;
/// How long a Synchronized record stays Synchronized without a refresh
/// (the official client's restart grace period).
pub const STALE_AFTER_NS: u64 = 5_000_000_000;
/// How far `as_of` may lie after the reader's monotonic now before it is a
/// causality breach (the official client's blur for coarse clocks).
const CAUSALITY_BLUR_NS: u64 = 1_000;
/// Read attempts before giving up on a writer that stays mid-update.
const READ_ATTEMPTS: u32 = 2_000;
/// How often the clock looks at its segment's path for a removed or
/// replaced file.
const REPLACE_CHECK_EVERY_NS: u64 = 1_000_000_000;
/// How often a clock whose reading failed or went stale looks at the path:
/// a restarted daemon's new file is found within this, and a segment that
/// stays gone costs one `stat` per this interval.
const URGENT_CHECK_EVERY_NS: u64 = 50_000_000;
/// Attempts that spin before the reader starts yielding its CPU.
const SPIN_ATTEMPTS: u32 = 64;

/// The segment layout versions this reader knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SegmentVersion {
    /// ClockBound 1.x, `/var/run/clockbound/shm`.
    V1,
    /// ClockBound 2.x, `/var/run/clockbound/shm0`.
    V2,
}

impl SegmentVersion {
    /// The version number in the segment header.
    pub const fn number(self) -> u16 {
        match self {
            SegmentVersion::V1 => 1,
            SegmentVersion::V2 => 2,
        }
    }

    /// The version with header number `n`, if known.
    pub const fn from_number(n: u16) -> Option<Self> {
        match n {
            1 => Some(SegmentVersion::V1),
            2 => Some(SegmentVersion::V2),
            _ => None,
        }
    }

    /// The path the daemon of this version writes by default.
    pub fn default_path(self) -> &'static Path {
        Path::new(match self {
            SegmentVersion::V1 => DEFAULT_V1_PATH,
            SegmentVersion::V2 => DEFAULT_V2_PATH,
        })
    }

    /// Bytes of the record after the header.
    const fn record_len(self) -> usize {
        match self {
            SegmentVersion::V1 => 56,
            SegmentVersion::V2 => 64,
        }
    }

    /// Bytes a segment of this version needs.
    pub const fn segment_len(self) -> usize {
        HEADER_LEN + self.record_len()
    }
}

/// A clock-error-bound record as the daemon wrote it, after validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// When the bound was computed (`CLOCK_MONOTONIC_COARSE`, ns).
    pub as_of: MonoTime,
    /// After this instant the record is not to be trusted (monotonic ns).
    pub void_after: MonoTime,
    /// The error bound at `as_of`, ns.
    pub bound_ns: u64,
    /// Bumped by the daemon on each clock disruption (v2; 0 in v1).
    pub disruption_marker: u64,
    /// The bound grows by this many ns per second since `as_of`.
    pub max_drift_ppb: u32,
    /// The status the daemon wrote.
    pub status: ClockStatus,
    /// Whether the daemon runs with clock-disruption support (v2; false in
    /// v1).
    pub disruption_support: bool,
}

impl Record {
    /// The reading this record gives at Unix time `real_ns` (the system
    /// clock) and monotonic time `mono_ns`, both read after the record was
    /// copied.
    ///
    /// Rules, as in `clock-bound-shm` 2.0.3's `compute_bound_at`, except
    /// where noted:
    /// * `max_drift_ppb >= 10^9` is malformed;
    /// * `as_of` more than 1 µs after `mono_ns` is a causality breach;
    /// * at or past `void_after` the status is Unknown (the official client
    ///   applies this only after the 5 s grace period; we apply it always);
    /// * Synchronized or FreeRunning older than 5 s reads FreeRunning;
    /// * `bound = bound_ns + ceil(elapsed_ns * max_drift_ppb / 10^9)` (the
    ///   official client truncates through an `f64`; rounding up keeps the
    ///   interval conservative, at most 1 ns wider).
    pub fn reading_at(
        &self,
        path: &Path,
        real_ns: u64,
        mono_ns: u64,
    ) -> Result<ClockReading, ClockError> {
        if self.max_drift_ppb >= 1_000_000_000 {
            return Err(ClockError::Malformed {
                path: path.to_owned(),
                what: format!("max_drift_ppb {} is 100% or more", self.max_drift_ppb),
            });
        }
        let as_of = self.as_of.as_nanos();
        if as_of > mono_ns.saturating_add(CAUSALITY_BLUR_NS) {
            return Err(ClockError::CausalityBreach {
                path: path.to_owned(),
                as_of_ns: as_of,
                now_ns: mono_ns,
            });
        }
        let elapsed = mono_ns.saturating_sub(as_of);
        let status = match self.status {
            ClockStatus::Synchronized | ClockStatus::FreeRunning
                if mono_ns >= self.void_after.as_nanos() =>
            {
                ClockStatus::Unknown
            }
            ClockStatus::Synchronized if elapsed >= STALE_AFTER_NS => ClockStatus::FreeRunning,
            other => other,
        };
        let growth = (u128::from(elapsed) * u128::from(self.max_drift_ppb)).div_ceil(1_000_000_000);
        let bound = u64::try_from(growth)
            .unwrap_or(u64::MAX)
            .saturating_add(self.bound_ns);
        Ok(ClockReading {
            interval: TimeInterval::around(real_ns, bound),
            status,
            source: ClockSource::ClockBound,
        })
    }

    /// Decodes the record words of a segment of `version`.
    fn decode(version: SegmentVersion, words: &[u64], path: &Path) -> Result<Record, ClockError> {
        let mut bytes = [0u8; MAX_RECORD_WORDS * 8];
        for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        let malformed = |what: String| ClockError::Malformed {
            path: path.to_owned(),
            what,
        };
        let i64_at = |off: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[off..off + 8]);
            i64::from_ne_bytes(b)
        };
        let u32_at = |off: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[off..off + 4]);
            u32::from_ne_bytes(b)
        };
        let timespec_at = |off: usize, name: &str| {
            let (sec, nsec) = (i64_at(off), i64_at(off + 8));
            match (u64::try_from(sec), u64::try_from(nsec)) {
                (Ok(s), Ok(n)) if n < 1_000_000_000 => s
                    .checked_mul(1_000_000_000)
                    .and_then(|s| s.checked_add(n))
                    .map(MonoTime::from_nanos)
                    .ok_or_else(|| malformed(format!("{name} {sec}s is out of range"))),
                _ => Err(malformed(format!("{name} is {sec}s {nsec}ns"))),
            }
        };
        let as_of = timespec_at(0, "as_of")?;
        let void_after = timespec_at(16, "void_after")?;
        let bound = i64_at(32);
        let bound_ns = u64::try_from(bound)
            .map_err(|_| malformed(format!("bound_nsec {bound} is negative")))?;
        let (disruption_marker, max_drift_ppb, status_raw, disruption_support) = match version {
            SegmentVersion::V1 => (0, u32_at(40), u32_at(48), false),
            SegmentVersion::V2 => {
                let marker = u64::from_ne_bytes(bytes[40..48].try_into().unwrap_or([0; 8]));
                (marker, u32_at(48), u32_at(52), bytes[56] != 0)
            }
        };
        let status = match (status_raw, version) {
            (0, _) => ClockStatus::Unknown,
            (1, _) => ClockStatus::Synchronized,
            (2, _) => ClockStatus::FreeRunning,
            (3, SegmentVersion::V2) => ClockStatus::Disrupted,
            (other, _) => return Err(malformed(format!("clock_status {}", other as i32))),
        };
        Ok(Record {
            as_of,
            void_after,
            bound_ns,
            disruption_marker,
            max_drift_ppb,
            status,
            disruption_support,
        })
    }
}

/// The mapped segment, seen as seqlock words.
struct SegmentWords<'a> {
    map: &'a Mapping,
    generation: &'a std::sync::atomic::AtomicU16,
}

impl SeqWords for SegmentWords<'_> {
    fn generation(&self, order: Ordering) -> u16 {
        self.generation.load(order)
    }

    fn word(&self, index: usize) -> u64 {
        // Offsets were checked against the mapping's length at open, so
        // `None` cannot happen; reading 0 would at worst fail validation.
        self.map
            .atomic_u64(HEADER_LEN + index * 8)
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    fn acquire_fence(&self) {
        fence(Ordering::Acquire);
    }

    fn relax(&self, attempt: u32) {
        if attempt < SPIN_ATTEMPTS {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// One mapping of a segment file, with the identity of the file mapped.
#[derive(Debug)]
struct Segment {
    version: SegmentVersion,
    map: Mapping,
    /// `(device, inode)` of the mapped file.
    file_id: (u64, u64),
}

impl Segment {
    fn open(path: &Path, expect: Option<SegmentVersion>) -> Result<Segment, ClockError> {
        let io_err = |action, source: io::Error| ClockError::Io {
            path: path.to_owned(),
            action,
            source,
        };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ClockError::SegmentMissing {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(io_err("open", e)),
        };
        let meta = file.metadata().map_err(|e| io_err("inspect", e))?;
        let len = meta.len();
        let truncated = |needed: usize| ClockError::Truncated {
            path: path.to_owned(),
            len,
            needed: needed as u64,
        };
        if len < HEADER_LEN as u64 {
            return Err(truncated(HEADER_LEN));
        }
        let map_len = usize::try_from(len).map_err(|_| truncated(HEADER_LEN))?;
        let map = Mapping::map_read_only(&file, map_len).map_err(|e| io_err("map", e))?;
        let u32_at = |off| map.atomic_u32(off).map_or(0, |w| w.load(Ordering::Relaxed));
        let found = [u32_at(0), u32_at(4)];
        if found != MAGIC {
            return Err(ClockError::BadMagic {
                path: path.to_owned(),
                found,
            });
        }
        let number = map
            .atomic_u16(VERSION_OFFSET)
            .map_or(0, |w| w.load(Ordering::Acquire));
        if number == 0 {
            return Err(ClockError::NotInitialized {
                path: path.to_owned(),
            });
        }
        let version =
            SegmentVersion::from_number(number).ok_or(ClockError::UnsupportedVersion {
                path: path.to_owned(),
                version: number,
            })?;
        if let Some(expected) = expect {
            if expected != version {
                return Err(ClockError::VersionMismatch {
                    path: path.to_owned(),
                    expected: expected.number(),
                    found: number,
                });
            }
        }
        if map.len() < version.segment_len() {
            return Err(truncated(version.segment_len()));
        }
        let segsize = u32_at(SEGSIZE_OFFSET);
        if (segsize as usize) < version.segment_len() {
            return Err(ClockError::Malformed {
                path: path.to_owned(),
                what: format!(
                    "header segment size {segsize} is below the {} bytes of a v{number} segment",
                    version.segment_len()
                ),
            });
        }
        Ok(Segment {
            version,
            map,
            file_id: (meta.dev(), meta.ino()),
        })
    }

    /// Whether the header still names the version found at open.
    fn version_unchanged(&self) -> bool {
        self.map
            .atomic_u16(VERSION_OFFSET)
            .is_some_and(|w| w.load(Ordering::Acquire) == self.version.number())
    }

    fn read_record(&self, path: &Path) -> Result<Record, ClockError> {
        let version_word = self.map.atomic_u16(VERSION_OFFSET);
        let generation = self.map.atomic_u16(GENERATION_OFFSET);
        let (Some(version_word), Some(generation)) = (version_word, generation) else {
            return Err(ClockError::Truncated {
                path: path.to_owned(),
                len: self.map.len() as u64,
                needed: HEADER_LEN as u64,
            });
        };
        match version_word.load(Ordering::Acquire) {
            0 => {
                return Err(ClockError::NotInitialized {
                    path: path.to_owned(),
                })
            }
            n if n != self.version.number() => {
                return Err(ClockError::VersionMismatch {
                    path: path.to_owned(),
                    expected: self.version.number(),
                    found: n,
                })
            }
            _ => {}
        }
        let words = SegmentWords {
            map: &self.map,
            generation,
        };
        let mut out = [0u64; MAX_RECORD_WORDS];
        let out = &mut out[..self.version.record_len() / 8];
        seqlock::read_consistent(&words, out, READ_ATTEMPTS).map_err(|e| match e {
            SeqReadError::Uninitialized => ClockError::NotInitialized {
                path: path.to_owned(),
            },
            SeqReadError::Busy { attempts } => ClockError::Busy {
                path: path.to_owned(),
                attempts,
            },
        })?;
        Record::decode(self.version, out, path)
    }
}

/// A clock that reads a ClockBound shared-memory segment.
///
/// The file is opened read-only and mapped `PROT_READ`, so a read-only
/// mount (a container's `hostPath` volume) is enough. At most once a
/// second it looks at the path again (one `stat`), so a daemon that is
/// stopped or restarted is followed without restarting the node:
///
/// * no file at the path any more (the daemon's segment was removed): every
///   reading is [`ClockError::SegmentMissing`], so the node stays a member
///   and does not lead, until a segment is back;
/// * a different file (new inode), or the same file with another length or
///   layout version (rewritten in place): the new one is mapped;
/// * the same file: it keeps being read; a daemon that stopped without
///   removing it leaves a record that degrades to FreeRunning, then
///   Unknown, as it should.
///
/// The official client also compares the record's disruption marker with
/// the VMClock device when the daemon runs with disruption support; this
/// reader relies on the daemon's own status (Disrupted) instead, which lags
/// by up to one daemon poll (100 ms).
///
/// ```no_run
/// use hedgerow_clock::{Clock, ClockBoundClock};
/// let clock = ClockBoundClock::open("/var/run/clockbound/shm0")?;
/// let now = clock.now()?;
/// println!("true time is in {:?} ({:?})", now.clock.interval, now.clock.status);
/// # Ok::<(), hedgerow_clock::ClockError>(())
/// ```
#[derive(Debug)]
pub struct ClockBoundClock {
    path: PathBuf,
    expect: Option<SegmentVersion>,
    segment: RwLock<Segment>,
    /// Monotonic ns of the last look at the path.
    last_path_check: AtomicU64,
    /// The last look found no usable file at the path: the mapped one is
    /// an orphan and is not read.
    detached: AtomicBool,
}

/// What the last look at a segment's path found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AtPath {
    /// The mapped file, unchanged.
    Same,
    /// Another file (new inode).
    Replaced,
    /// The mapped file rewritten in place with another length or layout
    /// version; `shorter` when it no longer covers the mapping (touching
    /// the missing pages would be SIGBUS).
    Reshaped { shorter: bool },
    /// Nothing.
    Missing,
}

impl ClockBoundClock {
    /// Opens the segment at `path` and detects its version from the header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ClockError> {
        Self::open_inner(path.as_ref(), None)
    }

    /// Opens the segment at `path`, refusing any version but `version`.
    pub fn open_version(
        path: impl AsRef<Path>,
        version: SegmentVersion,
    ) -> Result<Self, ClockError> {
        Self::open_inner(path.as_ref(), Some(version))
    }

    fn open_inner(path: &Path, expect: Option<SegmentVersion>) -> Result<Self, ClockError> {
        Ok(ClockBoundClock {
            path: path.to_owned(),
            expect,
            segment: RwLock::new(Segment::open(path, expect)?),
            last_path_check: AtomicU64::new(shm::monotonic_ns()),
            detached: AtomicBool::new(false),
        })
    }

    fn segment(&self) -> RwLockReadGuard<'_, Segment> {
        // A segment is valid whatever a panicking holder did.
        self.segment.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The segment's layout version.
    pub fn version(&self) -> SegmentVersion {
        self.segment().version
    }

    /// Whether the last look at the path found no usable segment there
    /// (the daemon is stopped or restarting): readings fail until one is
    /// back.
    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Relaxed)
    }

    /// Copies the current record (one consistent write of the daemon's).
    pub fn read_record(&self) -> Result<Record, ClockError> {
        self.segment().read_record(&self.path)
    }

    /// A reading, and whether its record is stale (older than 5 s).
    fn read_now(&self) -> Result<(Now, bool), ClockError> {
        let record = self.read_record()?;
        // Real before monotonic, both after the copy: a late monotonic read
        // only makes the bound more pessimistic, never breaks causality.
        let real = realtime_ns()?;
        let mono = shm::monotonic_ns();
        let clock = record.reading_at(&self.path, real, mono)?;
        let stale = mono.saturating_sub(record.as_of.as_nanos()) >= STALE_AFTER_NS;
        let now = Now {
            mono: MonoTime::from_nanos(mono),
            clock,
        };
        Ok((now, stale))
    }

    /// Looks at the path if a second has passed since the last look (50 ms
    /// when `now_please`: the reading just failed or went stale), and follows what it finds: maps a new file, or marks
    /// the mapping detached when nothing usable is there.
    fn check_path(&self, now_please: bool) {
        let mono = shm::monotonic_ns();
        let last = self.last_path_check.load(Ordering::Relaxed);
        let every = if now_please {
            URGENT_CHECK_EVERY_NS
        } else {
            REPLACE_CHECK_EVERY_NS
        };
        let due = mono.saturating_sub(last) >= every;
        if !due
            || self
                .last_path_check
                .compare_exchange(last, mono, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match self.at_path() {
            AtPath::Same => self.set_detached(false, None),
            AtPath::Missing => self.set_detached(true, None),
            // The mapped file is an orphan, or shorter than its mapping:
            // read the new one or nothing.
            at @ (AtPath::Replaced | AtPath::Reshaped { shorter: true }) => match self.remap() {
                Ok(()) => self.set_detached(false, None),
                Err(e) => {
                    tracing::debug!(?at, "segment path changed, new file not usable yet");
                    self.set_detached(true, Some(e))
                }
            },
            // Rewritten in place and still covering the mapping: the
            // mapping shows the new bytes, and its own checks say what is
            // wrong with them until the new shape can be mapped.
            AtPath::Reshaped { shorter: false } => {
                if self.remap().is_ok() {
                    self.set_detached(false, None);
                }
            }
        }
    }

    /// Maps the file now at the path in place of the current mapping.
    fn remap(&self) -> Result<(), ClockError> {
        let fresh = Segment::open(&self.path, self.expect)?;
        tracing::warn!(
            segment = %self.path.display(),
            "the ClockBound segment file was replaced or rewritten (daemon restarted?); mapping \
             the new one"
        );
        *self.segment.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// What is at the path now, against the mapped segment.
    fn at_path(&self) -> AtPath {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return AtPath::Missing;
        };
        let segment = self.segment();
        let mapped = segment.map.len() as u64;
        if (meta.dev(), meta.ino()) != segment.file_id {
            AtPath::Replaced
        } else if meta.len() < mapped {
            AtPath::Reshaped { shorter: true }
        } else if meta.len() != mapped || !segment.version_unchanged() {
            AtPath::Reshaped { shorter: false }
        } else {
            AtPath::Same
        }
    }

    fn set_detached(&self, detached: bool, why: Option<ClockError>) {
        let was = self.detached.swap(detached, Ordering::Relaxed);
        match (was, detached) {
            (false, true) => {
                let why = why.unwrap_or(ClockError::SegmentMissing {
                    path: self.path.clone(),
                });
                tracing::warn!(
                    error = %why,
                    "the ClockBound segment is gone (daemon stopped or restarting): this node \
                     does not lead until it is back"
                );
            }
            (true, false) => {
                tracing::info!(segment = %self.path.display(), "ClockBound segment back")
            }
            _ => {}
        }
    }
}

/// Unix time now from the system clock, in ns.
pub(crate) fn realtime_ns() -> Result<u64, ClockError> {
    shm::realtime_ns().ok_or(ClockError::SystemTimeBeforeEpoch)
}

impl Clock for ClockBoundClock {
    fn now(&self) -> Result<Now, ClockError> {
        self.check_path(false);
        let first = self.detached_error().map_or_else(|| self.read_now(), Err);
        if matches!(first, Ok((_, false))) {
            return first.map(|(now, _)| now);
        }
        // Stale or unreadable: a restarted daemon may have just written a
        // new file, so look now rather than within the second.
        self.check_path(true);
        match self.detached_error() {
            Some(e) => Err(e),
            None => self.read_now().map(|(now, _)| now),
        }
    }

    fn describe(&self) -> String {
        let state = if self.is_detached() {
            " (gone: the daemon is stopped or restarting; this node does not lead until it is \
             back)"
        } else {
            ""
        };
        format!(
            "ClockBound v{} segment at {}{state}",
            self.version().number(),
            self.path.display()
        )
    }
}

impl ClockBoundClock {
    /// The error every reading gives while the mapping is detached.
    fn detached_error(&self) -> Option<ClockError> {
        self.is_detached().then(|| ClockError::SegmentMissing {
            path: self.path.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn record(status: ClockStatus) -> Record {
        Record {
            as_of: MonoTime::from_nanos(100 * SEC),
            void_after: MonoTime::from_nanos(1100 * SEC),
            bound_ns: 10_000,
            disruption_marker: 0,
            max_drift_ppb: 1_000,
            status,
            disruption_support: false,
        }
    }

    fn at(r: &Record, mono: u64) -> Result<ClockReading, ClockError> {
        r.reading_at(Path::new("t"), 5_000 * SEC, mono)
    }

    #[test]
    fn bound_grows_with_drift_since_as_of() {
        // 2 s at 1000 ppb: 2 µs on top of the 10 µs (the crate's own test).
        let r = at(&record(ClockStatus::Synchronized), 102 * SEC).unwrap();
        assert_eq!(r.interval.earliest, 5_000 * SEC - 12_000);
        assert_eq!(r.interval.latest, 5_000 * SEC + 12_000);
        assert_eq!(r.status, ClockStatus::Synchronized);
        assert_eq!(r.source, ClockSource::ClockBound);
    }

    #[test]
    fn growth_rounds_up() {
        // 1 ns at 1000 ppb is 10^-6 ns of drift: still 1 ns wider.
        let r = at(&record(ClockStatus::Synchronized), 100 * SEC + 1).unwrap();
        assert_eq!(r.interval.bound_ns(), 10_001);
    }

    #[test]
    fn stale_synchronized_reads_free_running() {
        let r = record(ClockStatus::Synchronized);
        assert_eq!(
            at(&r, 105 * SEC - 1).unwrap().status,
            ClockStatus::Synchronized
        );
        assert_eq!(at(&r, 105 * SEC).unwrap().status, ClockStatus::FreeRunning);
    }

    #[test]
    fn past_void_after_nothing_is_trusted() {
        for s in [ClockStatus::Synchronized, ClockStatus::FreeRunning] {
            let r = record(s);
            assert_eq!(
                at(&r, 1100 * SEC - 1).unwrap().status,
                ClockStatus::FreeRunning
            );
            assert_eq!(at(&r, 1100 * SEC).unwrap().status, ClockStatus::Unknown);
        }
        let mut r = record(ClockStatus::Synchronized);
        r.void_after = MonoTime::from_nanos(101 * SEC);
        assert_eq!(
            at(&r, 101 * SEC).unwrap().status,
            ClockStatus::Unknown,
            "void_after wins even inside the grace period"
        );
    }

    #[test]
    fn unknown_and_disrupted_stay_so() {
        for s in [ClockStatus::Unknown, ClockStatus::Disrupted] {
            assert_eq!(at(&record(s), 101 * SEC).unwrap().status, s);
        }
    }

    #[test]
    fn as_of_in_the_future_is_a_causality_breach() {
        let r = record(ClockStatus::Synchronized);
        // Within the 1 µs blur: zero elapsed time.
        assert_eq!(
            at(&r, 100 * SEC - 1_000).unwrap().interval.bound_ns(),
            10_000
        );
        let e = at(&r, 100 * SEC - 1_001).unwrap_err();
        assert!(matches!(e, ClockError::CausalityBreach { .. }), "{e}");
    }

    #[test]
    fn absurd_drift_is_malformed() {
        let mut r = record(ClockStatus::Synchronized);
        r.max_drift_ppb = 1_000_000_000;
        assert!(matches!(
            at(&r, 101 * SEC),
            Err(ClockError::Malformed { .. })
        ));
    }

    fn words_v2(fields: [i64; 5], marker: u64, drift: u32, status: i32, flag: u8) -> Vec<u64> {
        let mut b = Vec::new();
        for f in fields {
            b.extend_from_slice(&f.to_ne_bytes());
        }
        b.extend_from_slice(&marker.to_ne_bytes());
        b.extend_from_slice(&drift.to_ne_bytes());
        b.extend_from_slice(&status.to_ne_bytes());
        b.push(flag);
        b.resize(64, 0);
        b.chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn decode_refuses_impossible_fields() {
        let p = Path::new("t");
        let ok = words_v2([1, 2, 3, 4, 5], 6, 7, 1, 1);
        let r = Record::decode(SegmentVersion::V2, &ok, p).unwrap();
        assert_eq!(r.as_of, MonoTime::from_nanos(SEC + 2));
        assert_eq!(r.void_after, MonoTime::from_nanos(3 * SEC + 4));
        assert_eq!(
            (r.bound_ns, r.disruption_marker, r.max_drift_ppb),
            (5, 6, 7)
        );
        assert!(r.disruption_support);
        for bad in [
            words_v2([1, 2, 3, 4, -5], 6, 7, 1, 0), // negative bound
            words_v2([1, SEC as i64, 3, 4, 5], 6, 7, 1, 0), // nsec overflow
            words_v2([-1, 2, 3, 4, 5], 6, 7, 1, 0), // negative seconds
            words_v2([1, 2, 3, 4, 5], 6, 7, 4, 0),  // unknown status
        ] {
            let e = Record::decode(SegmentVersion::V2, &bad, p).unwrap_err();
            assert!(matches!(e, ClockError::Malformed { .. }), "{e}");
        }
        // Status 3 (Disrupted) does not exist in v1.
        let mut v1 = ok.clone();
        v1[6] = u64::from_ne_bytes({
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&3i32.to_ne_bytes());
            b
        });
        assert!(Record::decode(SegmentVersion::V1, &v1[..7], p).is_err());
    }
}
