//! Reading structured choices out of fuzzer bytes, without the `arbitrary`
//! crate: every read succeeds (zeros once the bytes run out), so any byte
//! string is a valid input and small mutations make small changes.

/// A cursor over fuzzer bytes.
#[derive(Debug)]
pub struct Unstructured<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Unstructured<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Unstructured { data, pos: 0 }
    }

    /// Whether every byte was used.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// One byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// A number below `n` (0 when `n` is 0), from as few bytes as it needs.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let raw = if n <= 256 {
            u64::from(self.u8())
        } else if n <= 1 << 16 {
            u64::from(self.u16())
        } else if n <= 1 << 32 {
            u64::from(self.u32())
        } else {
            self.u64()
        };
        raw % n
    }

    /// A `usize` below `n`.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with probability `num / 256`.
    pub fn chance(&mut self, num: u8) -> bool {
        self.u8() < num
    }

    /// Up to `max` bytes taken from the input (fewer near its end).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let want = self.index(max + 1);
        let start = self.pos.min(self.data.len());
        let end = (start + want).min(self.data.len());
        self.pos = start + want;
        &self.data[start..end]
    }

    /// The rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}
