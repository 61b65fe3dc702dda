//! An opaque application byte string: a shared, reference-counted buffer
//! (`bytes::Bytes`) that serializes as one length-prefixed byte run
//! (postcard writes a plain `Vec<u8>` byte by byte).
//!
//! Sharing is what keeps a bulk stream from copying its bytes at every
//! step: a writer's buffer is cut into chunks, a chunk goes to the
//! transport, and a received chunk is a slice of the frame it came in, all
//! without a copy. This room holds the type; it never looks inside.

use alloc::vec::Vec;
use bytes::Bytes;
use core::fmt;
use core::ops::Deref;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Application bytes carried by a message (request, reply, metadata,
/// stream data). Cloning one shares the bytes instead of copying them.
///
/// ```
/// use hedgerow_core::Payload;
/// let p = Payload::from(vec![1, 2, 3]);
/// let q = p.clone(); // shares the buffer
/// assert_eq!(&q[..], &[1, 2, 3]);
/// assert_eq!(p.into_vec(), vec![1, 2, 3]);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Payload(Bytes);

impl Payload {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as a vector: free when this payload is the only owner of
    /// a whole buffer that came from a vector, a copy otherwise.
    pub fn into_vec(self) -> Vec<u8> {
        Vec::from(self.0)
    }

    /// The shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The first `n` bytes (at most all), removed from `self` without a
    /// copy.
    pub fn split_to(&mut self, n: usize) -> Payload {
        Payload(self.0.split_to(n.min(self.0.len())))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for Payload {
    fn from(v: Bytes) -> Self {
        Payload(v)
    }
}

impl From<Payload> for Bytes {
    fn from(p: Payload) -> Self {
        p.0
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(Bytes::from(v))
    }
}

impl From<&[u8]> for Payload {
    fn from(v: &[u8]) -> Self {
        Payload(Bytes::copy_from_slice(v))
    }
}

impl From<&Vec<u8>> for Payload {
    fn from(v: &Vec<u8>) -> Self {
        Payload(Bytes::copy_from_slice(v))
    }
}

impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(v: &[u8; N]) -> Self {
        Payload(Bytes::copy_from_slice(v))
    }
}

impl From<&str> for Payload {
    fn from(v: &str) -> Self {
        Payload(Bytes::copy_from_slice(v.as_bytes()))
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload::from(v))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload::from(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(Payload::from(v))
            }
        }
        d.deserialize_byte_buf(BytesVisitor)
    }
}
