//! The reader side of ClockBound's seqlock: copy the record words while the
//! generation stays the same even number, retry otherwise, give up after a
//! bounded number of attempts.
//!
//! This module owns the retry protocol and its memory orderings; it is
//! written against [`SeqWords`] so that the production mapping and the
//! loom model run the very same function. It must never decode the words
//! (that is [`crate::clockbound`]'s job) and never touch memory directly
//! (that is [`crate::shm`]'s).
//!
//! Orderings (the classic seqlock reader, Boehm 2012): the first generation
//! load is `Acquire`, so the record loads cannot move before it; the record
//! words are `Relaxed` atomic loads, so a racing writer is not a data race;
//! an `Acquire` fence after them keeps them before the second, `Relaxed`,
//! generation load. A writer that bumps the generation to odd, issues a
//! `Release` fence, stores the words and bumps to even with `Release` then
//! cannot be observed half-way by a reader that sees the same even
//! generation twice.

use std::sync::atomic::Ordering;

/// Access to a seqlock-guarded record as atomic words.
pub(crate) trait SeqWords {
    /// Loads the generation counter with `order`.
    fn generation(&self, order: Ordering) -> u16;
    /// Loads record word `index` (`Relaxed`). `index` is below the length
    /// of the buffer passed to [`read_consistent`].
    fn word(&self, index: usize) -> u64;
    /// An `Acquire` fence (the model substitutes loom's).
    fn acquire_fence(&self);
    /// Called between attempts: spin first, then let the writer run.
    fn relax(&self, attempt: u32);
}

/// Why no consistent copy was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SeqReadError {
    /// Generation 0: the writer has wiped the segment and not yet written a
    /// record.
    Uninitialized,
    /// The generation was odd or changed on every attempt.
    Busy {
        /// How many attempts were made.
        attempts: u32,
    },
}

/// Copies the record into `out`, word by word, such that all words come
/// from one completed write. Returns the generation the copy belongs to.
pub(crate) fn read_consistent<W: SeqWords + ?Sized>(
    words: &W,
    out: &mut [u64],
    max_attempts: u32,
) -> Result<u16, SeqReadError> {
    for attempt in 0..max_attempts {
        let first = words.generation(Ordering::Acquire);
        if first == 0 {
            return Err(SeqReadError::Uninitialized);
        }
        if first & 1 == 0 {
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = words.word(i);
            }
            words.acquire_fence();
            let second = words.generation(Ordering::Relaxed);
            if first == second {
                return Ok(first);
            }
        }
        words.relax(attempt);
    }
    Err(SeqReadError::Busy {
        attempts: max_attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A scripted segment: the generation follows a script, the words are
    /// the generation times the word index, so a copy is recognisable.
    struct Scripted {
        gens: Vec<u16>,
        at: Cell<usize>,
    }

    impl SeqWords for Scripted {
        fn generation(&self, _: Ordering) -> u16 {
            let i = self.at.get();
            self.at.set(i + 1);
            self.gens[i.min(self.gens.len() - 1)]
        }
        fn word(&self, index: usize) -> u64 {
            let g = self.gens[self.at.get().min(self.gens.len()) - 1];
            u64::from(g) * 100 + index as u64
        }
        fn acquire_fence(&self) {}
        fn relax(&self, _: u32) {}
    }

    fn read(gens: &[u16], attempts: u32) -> Result<(u16, [u64; 2]), SeqReadError> {
        let s = Scripted {
            gens: gens.to_vec(),
            at: Cell::new(0),
        };
        let mut out = [0; 2];
        read_consistent(&s, &mut out, attempts).map(|g| (g, out))
    }

    #[test]
    fn stable_even_generation_is_one_attempt() {
        assert_eq!(read(&[4, 4], 3), Ok((4, [400, 401])));
    }

    #[test]
    fn odd_or_changed_generation_is_retried() {
        // odd, then changed under the copy, then stable.
        assert_eq!(read(&[5, 6, 8, 8, 8], 5), Ok((8, [800, 801])));
    }

    #[test]
    fn a_writer_that_never_finishes_is_an_error_not_a_hang() {
        assert_eq!(read(&[7], 10), Err(SeqReadError::Busy { attempts: 10 }));
    }

    #[test]
    fn generation_zero_means_not_written_yet() {
        assert_eq!(read(&[0], 10), Err(SeqReadError::Uninitialized));
    }
}

/// The loom model: the production [`read_consistent`] against a writer
/// that follows ClockBound's protocol. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p hedgerow-clock --release --lib seqlock::loom_model`.
#[cfg(all(test, loom))]
mod loom_model {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use loom::sync::atomic::{fence, AtomicU16, AtomicU64};
    use loom::sync::Arc;
    use loom::thread;

    const WORDS: usize = 3;

    struct Segment {
        generation: AtomicU16,
        words: [AtomicU64; WORDS],
    }

    impl Segment {
        /// A segment holding record 1 (every word 1) at generation 2.
        fn new() -> Self {
            Segment {
                generation: AtomicU16::new(2),
                words: [AtomicU64::new(1), AtomicU64::new(1), AtomicU64::new(1)],
            }
        }

        /// clock-bound-shm 2.0.3's writer: a Release store of the odd
        /// generation, no fence, words, Release store of the even one.
        fn write_as_shipped(&self, value: u64) {
            let g = self.generation.load(Ordering::Acquire);
            self.generation.store(g.wrapping_add(1), Ordering::Release);
            for w in &self.words {
                w.store(value, Ordering::Relaxed);
            }
            self.generation.store(g.wrapping_add(2), Ordering::Release);
        }

        /// ClockBound's writer: odd generation, fence, words, even.
        fn write(&self, value: u64) {
            let g = self.generation.load(Ordering::Relaxed);
            self.generation.store(g.wrapping_add(1), Ordering::Relaxed);
            fence(Ordering::Release);
            for w in &self.words {
                w.store(value, Ordering::Relaxed);
            }
            self.generation.store(g.wrapping_add(2), Ordering::Release);
        }
    }

    impl SeqWords for Segment {
        fn generation(&self, order: Ordering) -> u16 {
            self.generation.load(order)
        }
        fn word(&self, index: usize) -> u64 {
            self.words[index].load(Ordering::Relaxed)
        }
        fn acquire_fence(&self) {
            fence(Ordering::Acquire);
        }
        fn relax(&self, _: u32) {
            thread::yield_now();
        }
    }

    /// A reader that copies without checking the generation again: the
    /// model must catch it, or the model proves nothing.
    struct Unchecked<'a>(&'a Segment);

    impl SeqWords for Unchecked<'_> {
        fn generation(&self, order: Ordering) -> u16 {
            // Pretend the generation never changes.
            let _ = self.0.generation.load(order);
            2
        }
        fn word(&self, index: usize) -> u64 {
            self.0.word(index)
        }
        fn acquire_fence(&self) {}
        fn relax(&self, _: u32) {
            thread::yield_now();
        }
    }

    /// A reader that forgets the acquire fence between the record loads
    /// and the second generation load.
    struct Unfenced<'a>(&'a Segment);

    impl SeqWords for Unfenced<'_> {
        fn generation(&self, order: Ordering) -> u16 {
            self.0.generation(order)
        }
        fn word(&self, index: usize) -> u64 {
            self.0.word(index)
        }
        fn acquire_fence(&self) {}
        fn relax(&self, _: u32) {
            thread::yield_now();
        }
    }

    fn builder() -> loom::model::Builder {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b
    }

    fn assert_whole(out: &[u64; WORDS]) {
        assert!(
            out.iter().all(|w| *w == out[0]) && (1..=3).contains(&out[0]),
            "torn or invented record: {out:?}"
        );
    }

    #[test]
    fn reader_never_returns_a_torn_record() {
        builder().check(|| {
            let seg = Arc::new(Segment::new());
            let writer = {
                let seg = seg.clone();
                thread::spawn(move || {
                    seg.write(2);
                    seg.write(3);
                })
            };
            let mut out = [0u64; WORDS];
            match read_consistent(&*seg, &mut out, 3) {
                Ok(g) => {
                    assert_eq!(g % 2, 0, "returned an in-progress generation");
                    assert_whole(&out);
                    // The generation names the record that was copied.
                    assert_eq!(u64::from(g / 2), out[0]);
                }
                Err(SeqReadError::Busy { .. }) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
            writer.join().unwrap();
        });
    }

    #[test]
    #[should_panic(expected = "torn")]
    fn model_catches_a_reader_without_the_second_check() {
        builder().check(|| {
            let seg = Arc::new(Segment::new());
            let writer = {
                let seg = seg.clone();
                thread::spawn(move || seg.write(2))
            };
            let mut out = [0u64; WORDS];
            if read_consistent(&Unchecked(&seg), &mut out, 1).is_ok() {
                assert_whole(&out);
            }
            writer.join().unwrap();
        });
    }

    /// Not our bug, but worth knowing: the writer as shipped in
    /// clock-bound-shm 2.0.3 stores the odd generation with `Release` and
    /// no fence, which does not keep the record stores after it. Under the
    /// language memory model (and on weakly ordered CPUs such as aarch64,
    /// not on x86, whose stores stay in order) a reader following the
    /// protocol can then copy a torn record; no reader can detect that.
    #[test]
    #[should_panic(expected = "torn")]
    fn model_shows_the_shipped_writer_needs_a_fence() {
        builder().check(|| {
            let seg = Arc::new(Segment::new());
            let writer = {
                let seg = seg.clone();
                thread::spawn(move || seg.write_as_shipped(2))
            };
            let mut out = [0u64; WORDS];
            if read_consistent(&*seg, &mut out, 1).is_ok() {
                assert_whole(&out);
            }
            writer.join().unwrap();
        });
    }

    #[test]
    #[should_panic(expected = "torn")]
    fn model_catches_a_reader_without_the_fence() {
        builder().check(|| {
            let seg = Arc::new(Segment::new());
            let writer = {
                let seg = seg.clone();
                thread::spawn(move || seg.write(2))
            };
            let mut out = [0u64; WORDS];
            if read_consistent(&Unfenced(&seg), &mut out, 1).is_ok() {
                assert_whole(&out);
            }
            writer.join().unwrap();
        });
    }
}
