//! [`ClockError`]: everything that can stop a clock from producing a
//! reading, each variant worded for the operator who has to fix it.
//!
//! This module owns the wording; it must never decide policy (whether a
//! failure is fatal, or falls back to another clock is the caller's call).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A clock could not be opened or read.
///
/// Every message says what was found and what to check. A node that gets
/// an error from its clock treats it like a reading with status Unknown:
/// it stays a member and does not lead.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClockError {
    /// No file at the segment path.
    SegmentMissing {
        /// Where the segment was expected.
        path: PathBuf,
    },
    /// Neither the v2 nor the v1 segment exists.
    NoSegmentFound {
        /// The v2 path that was tried.
        v2: PathBuf,
        /// The v1 path that was tried.
        v1: PathBuf,
    },
    /// The file exists but could not be opened, inspected or mapped.
    Io {
        /// The segment path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The file does not start with ClockBound's magic number.
    BadMagic {
        /// The segment path.
        path: PathBuf,
        /// The two magic words found.
        found: [u32; 2],
    },
    /// The file is shorter than a segment of its version.
    Truncated {
        /// The segment path.
        path: PathBuf,
        /// The file's length in bytes.
        len: u64,
        /// The length a segment needs.
        needed: u64,
    },
    /// A segment layout version this reader does not know.
    UnsupportedVersion {
        /// The segment path.
        path: PathBuf,
        /// The version in the header.
        version: u16,
    },
    /// The segment has a version other than the one asked for (or changed
    /// version since it was opened: the daemon was replaced).
    VersionMismatch {
        /// The segment path.
        path: PathBuf,
        /// The version asked for (or found at open).
        expected: u16,
        /// The version in the header now.
        found: u16,
    },
    /// The daemon has created the segment but not yet written a record.
    NotInitialized {
        /// The segment path.
        path: PathBuf,
    },
    /// The writer was mid-update on every attempt.
    Busy {
        /// The segment path.
        path: PathBuf,
        /// How many attempts were made.
        attempts: u32,
    },
    /// A record or header field holds an impossible value.
    Malformed {
        /// The segment path.
        path: PathBuf,
        /// Which field and value.
        what: String,
    },
    /// The record says it was written after the reader's monotonic now.
    CausalityBreach {
        /// The segment path.
        path: PathBuf,
        /// The record's `as_of` (monotonic ns).
        as_of_ns: u64,
        /// The reader's monotonic now (ns).
        now_ns: u64,
    },
    /// The system clock reads before 1970.
    SystemTimeBeforeEpoch,
}

impl fmt::Display for ClockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockError::SegmentMissing { path } => write!(
                f,
                "no ClockBound segment at {}: is the clockbound daemon running on this host \
                 (`systemctl status clockbound`)? In a container, is the host's \
                 /var/run/clockbound mounted into it (read-only hostPath volume), and does the \
                 configured path point at it?",
                path.display()
            ),
            ClockError::NoSegmentFound { v2, v1 } => write!(
                f,
                "no ClockBound segment at {} (v2) or {} (v1): start the clockbound daemon, or \
                 mount its directory into the container, or configure the segment path",
                v2.display(),
                v1.display()
            ),
            ClockError::Io {
                path,
                action,
                source,
            } => write!(
                f,
                "could not {action} the ClockBound segment {}: {source} (the process needs \
                 read permission on the file; it is world-readable by default)",
                path.display()
            ),
            ClockError::BadMagic { path, found } => write!(
                f,
                "{} is not a ClockBound segment (magic {:#010x} {:#010x}): check that the path \
                 names the shm file the clockbound daemon writes",
                path.display(),
                found[0],
                found[1]
            ),
            ClockError::Truncated { path, len, needed } => write!(
                f,
                "the ClockBound segment {} is {len} bytes, a segment needs at least {needed}: the \
                 daemon may be starting (retry in a second), or the file is not a segment",
                path.display()
            ),
            ClockError::UnsupportedVersion { path, version } => write!(
                f,
                "the ClockBound segment {} has layout version {version}; this reader knows \
                 versions 1 (shm, ClockBound 1.x) and 2 (shm0, ClockBound 2.x): upgrade hedgerow \
                 or point it at a segment of a known version",
                path.display()
            ),
            ClockError::VersionMismatch {
                path,
                expected,
                found,
            } => write!(
                f,
                "the ClockBound segment {} has layout version {found}, expected {expected}: the \
                 daemon was replaced by another version; restart this process to re-detect it",
                path.display()
            ),
            ClockError::NotInitialized { path } => write!(
                f,
                "the ClockBound segment {} holds no record yet: the daemon is starting or \
                 restarting; retry in a second, and check the daemon's log if it persists",
                path.display()
            ),
            ClockError::Busy { path, attempts } => write!(
                f,
                "the ClockBound segment {} was being rewritten on all {attempts} read attempts: \
                 the daemon may have died mid-update; restart it",
                path.display()
            ),
            ClockError::Malformed { path, what } => write!(
                f,
                "the ClockBound segment {} is malformed ({what}): restart the clockbound daemon; \
                 if it persists, the file is not written by a compatible daemon",
                path.display()
            ),
            ClockError::CausalityBreach {
                path,
                as_of_ns,
                now_ns,
            } => write!(
                f,
                "the ClockBound segment {} was written at monotonic {as_of_ns} ns, after this \
                 reader's now ({now_ns} ns): the file comes from another boot or host, or is \
                 corrupt; restart the clockbound daemon on this host",
                path.display()
            ),
            ClockError::SystemTimeBeforeEpoch => write!(
                f,
                "the system clock reads before 1970: the host's clock is not set; start its time \
                 synchronisation (chrony) before this process"
            ),
        }
    }
}

impl std::error::Error for ClockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClockError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
