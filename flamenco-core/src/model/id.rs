//! `ObjectId`: the 12-byte identifier of tasks, workers, jobs and queued updates.
//!
//! Compatible with MongoDB ObjectIds (4-byte big-endian seconds, 5 random bytes, 3-byte
//! counter), so ids sort by creation time and a database left by the Go Manager can be read.
//! In JSON an id is a 24-character lowercase hex string; `""` and `null` mean "no id".

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 12-byte id, shown as 24 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 12]);

/// The text was not 24 hexadecimal characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ObjectId {0:?}: expected 24 hexadecimal characters")]
pub struct InvalidObjectId(pub String);

fn process_random() -> &'static [u8; 5] {
    static RANDOM: OnceLock<[u8; 5]> = OnceLock::new();
    RANDOM.get_or_init(rand::random)
}

fn next_counter() -> u32 {
    static COUNTER: OnceLock<AtomicU32> = OnceLock::new();
    COUNTER
        .get_or_init(|| AtomicU32::new(rand::random::<u32>() & 0x00ff_ffff))
        .fetch_add(1, Ordering::Relaxed)
        & 0x00ff_ffff
}

impl ObjectId {
    /// A new id for "now", unique within this process and very likely across processes.
    pub fn new() -> Self {
        let secs = chrono::Utc::now().timestamp() as u32;
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&secs.to_be_bytes());
        bytes[4..9].copy_from_slice(process_random());
        bytes[9..].copy_from_slice(&next_counter().to_be_bytes()[1..]);
        ObjectId(bytes)
    }

    /// An id from its raw bytes.
    pub const fn from_bytes(bytes: [u8; 12]) -> Self {
        ObjectId(bytes)
    }

    /// The raw bytes.
    pub const fn bytes(&self) -> [u8; 12] {
        self.0
    }

    /// The 24-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse the 24-character hex form (either case).
    pub fn parse(s: &str) -> Result<Self, InvalidObjectId> {
        if s.len() != 24 {
            return Err(InvalidObjectId(s.to_string()));
        }
        let mut bytes = [0u8; 12];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| InvalidObjectId(s.to_string()))?;
        Ok(ObjectId(bytes))
    }
}

impl Default for ObjectId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for ObjectId {
    type Err = InvalidObjectId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectId::parse(s)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ObjectId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde helpers for an optional id written as `""` when absent (v2's JSON form of an
/// empty ObjectId). Reading accepts `""`, `null` or a missing field as "absent".
pub mod empty_as_none {
    use super::ObjectId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<ObjectId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_str(&id.to_hex()),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ObjectId>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => ObjectId::parse(s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ObjectId::new();
        assert_eq!(ObjectId::parse(&id.to_hex()).unwrap(), id);
        assert_eq!(id.to_hex().len(), 24);
    }

    #[test]
    fn rejects_bad_ids() {
        assert!(ObjectId::parse("1234").is_err());
        assert!(ObjectId::parse("zzzzzzzzzzzzzzzzzzzzzzzz").is_err());
        assert!(ObjectId::parse("aaaaaaaaaaaaaaaaaaaaaaaaa").is_err());
    }

    #[test]
    fn new_ids_sort_by_creation() {
        let a = ObjectId::new();
        let b = ObjectId::new();
        assert!(a < b, "{a} should sort before {b}");
    }
}
