//! The only module of this crate that uses `unsafe`: it maps a ClockBound
//! segment read-only, hands out the mapped header and record words as
//! shared references to atomics, and reads `CLOCK_MONOTONIC` as raw
//! nanoseconds (which `std` does not expose).
//!
//! It owns the mapping's lifetime and nothing else. It must never write to
//! the mapping, never hand out a plain (non-atomic) view of mapped bytes —
//! the daemon rewrites them concurrently — and never decide what the bytes
//! mean: decoding lives in [`crate::clockbound`], the retry protocol in
//! [`crate::seqlock`].
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64};

/// A read-only, shared mapping of a whole file.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and only ever read through atomic loads
// (`atomic_u16/u32/u64` below), so sharing it across threads cannot race in
// the Rust memory model; the pointer stays valid until `Drop`, which needs
// `&mut self`, i.e. no outstanding borrows.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: every access through `&Mapping` is an atomic load.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file` read-only and shared, so the
    /// daemon's later writes are visible. `len` must be non-zero and at
    /// most the file's length (the caller checked it with `fstat`).
    pub(crate) fn map_read_only(file: &File, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot map an empty file",
            ));
        }
        // SAFETY: a fresh mapping at an address the kernel picks (null
        // hint), of a file descriptor we own for the duration of the call;
        // PROT_READ + MAP_SHARED never aliases memory Rust owns. The result
        // is checked against MAP_FAILED before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        Ok(Mapping { ptr, len })
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A pointer to `size` bytes at `offset`, if they lie inside the
    /// mapping and `offset` is aligned to `size`.
    fn slot(&self, offset: usize, size: usize) -> Option<NonNull<u8>> {
        let end = offset.checked_add(size)?;
        if end > self.len || !offset.is_multiple_of(size) {
            return None;
        }
        // SAFETY: `offset + size <= len`, so the result stays inside the
        // mapping (one allocation from the kernel's point of view).
        Some(unsafe { self.ptr.add(offset) })
    }

    /// The `u16` at byte `offset`, as an atomic.
    pub(crate) fn atomic_u16(&self, offset: usize) -> Option<&AtomicU16> {
        let p = self.slot(offset, 2)?;
        // SAFETY: in bounds and 2-aligned (mmap returns page-aligned memory
        // and `slot` checked the offset's alignment); the reference lives no
        // longer than `&self`, hence no longer than the mapping. Atomic loads
        // of at most pointer size are allowed on read-only memory (std
        // `atomic` docs, "Atomic accesses to read-only memory"), and we only
        // load.
        Some(unsafe { p.cast::<AtomicU16>().as_ref() })
    }

    /// The `u32` at byte `offset`, as an atomic.
    pub(crate) fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        let p = self.slot(offset, 4)?;
        // SAFETY: as in `atomic_u16`, with 4-byte size and alignment.
        Some(unsafe { p.cast::<AtomicU32>().as_ref() })
    }

    /// The `u64` at byte `offset`, as an atomic.
    pub(crate) fn atomic_u64(&self, offset: usize) -> Option<&AtomicU64> {
        let p = self.slot(offset, 8)?;
        // SAFETY: as in `atomic_u16`, with 8-byte size and alignment; 8
        // bytes is the pointer size on the 64-bit targets ClockBound runs on.
        Some(unsafe { p.cast::<AtomicU64>().as_ref() })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; `&mut self`
        // proves no reference into the mapping is alive. A failing munmap
        // only leaks address space, so its result is ignored.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// `CLOCK_REALTIME` in nanoseconds since the Unix epoch, or `None` before
/// it: what `SystemTime::now().duration_since(UNIX_EPOCH)` gives, read as
/// [`monotonic_ns`] reads its clock, without the checked subtraction (a
/// reading is taken for every input).
pub(crate) fn realtime_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec for the call;
    // CLOCK_REALTIME is always supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// `CLOCK_MONOTONIC` in nanoseconds since boot: the clock ClockBound's
/// `as_of`/`void_after` are measured against (the daemon writes the coarse
/// variant, which never runs ahead of this one).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec for the call;
    // CLOCK_MONOTONIC is always supported on Linux, and on the impossible
    // failure `ts` stays zero, which callers see as "time did not move".
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write;
    use std::sync::atomic::Ordering;

    #[test]
    fn maps_and_loads_words_in_bounds_only() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&0x1122_3344_5566_7788u64.to_ne_bytes())
            .unwrap();
        f.write_all(&[0u8; 8]).unwrap();
        let m = Mapping::map_read_only(&f, 16).unwrap();
        assert_eq!(m.len(), 16);
        let w = m.atomic_u64(0).unwrap().load(Ordering::Relaxed);
        assert_eq!(w, 0x1122_3344_5566_7788);
        assert!(m.atomic_u64(16).is_none(), "past the end");
        assert!(m.atomic_u64(12).is_none(), "straddles the end");
        assert!(m.atomic_u32(2).is_none(), "misaligned");
        assert!(m.atomic_u16(14).is_some());
    }

    #[test]
    fn empty_file_is_refused() {
        let f = tempfile::tempfile().unwrap();
        assert!(Mapping::map_read_only(&f, 0).is_err());
    }

    #[test]
    fn monotonic_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
