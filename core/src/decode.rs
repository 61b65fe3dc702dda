//! Why bytes could not become a frame: the one error the decoder and the
//! shape checks of decoded values return. A leaf room that names no other:
//! `wire` decodes and `view` checks the members it carries, and both say
//! what went wrong in these words without either reaching into the other.
//! It must never grow decoding logic of its own.

use core::fmt;

/// Why bytes could not become a frame. Any of these closes the connection
/// (with a logged reason); the node keeps running.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix exceeds the configured maximum.
    TooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A zero-length frame.
    Empty,
    /// The body is not a valid frame (garbage, truncated, unknown kind).
    Malformed,
    /// The body decoded but breaks a protocol limit.
    Invalid(&'static str),
    /// The body decoded with bytes left over.
    TrailingBytes,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len, max } => write!(
                f,
                "frame of {len} bytes exceeds the limit of {max}; raise max_frame_len on both sides if this is legitimate"
            ),
            DecodeError::Empty => f.write_str("empty frame"),
            DecodeError::Malformed => f.write_str("malformed frame (not hedgerow, or a newer message kind)"),
            DecodeError::Invalid(what) => write!(f, "frame breaks a protocol limit: {what}"),
            DecodeError::TrailingBytes => f.write_str("frame has trailing bytes"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}
