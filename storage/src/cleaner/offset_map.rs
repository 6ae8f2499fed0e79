//! The cleaner's key -> latest offset map, held to a byte budget.
//!
//! Keys are stored as 128-bit hashes (two SipHash-1-3 states with per-map random keys),
//! not as bytes, so an entry has a fixed size whatever the key length: this is what lets
//! `log.cleaner.dedupe.buffer.size` bound the memory of a cleaning round. Two keys sharing
//! a 128-bit hash would make the older record of one look superseded by the other; the
//! chance is about n²/2¹²⁹ (Kafka accepts the same risk with MD5).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use crate::types::Offset;

/// Bytes one entry may cost, counted generously: 16 bytes of key hash and 8 of offset,
/// hashbrown's control byte, its 7/8 load factor and power-of-two growth (a table just
/// past a doubling holds under half its slots). Dividing the budget by this keeps the
/// table within it.
pub const OFFSET_MAP_ENTRY_BYTES: usize = 64;

/// The map's own keys are already uniform hashes: fold them, do not hash again.
#[derive(Default)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = (value as u64) ^ ((value >> 64) as u64);
    }
}

pub struct OffsetMap {
    entries: HashMap<u128, Offset, BuildHasherDefault<FoldHasher>>,
    hash_low: RandomState,
    hash_high: RandomState,
    entries_max: usize,
}

impl OffsetMap {
    /// A map that holds at most `budget_bytes / OFFSET_MAP_ENTRY_BYTES` keys. The table
    /// grows as keys arrive; nothing is allocated up front.
    pub fn with_budget(budget_bytes: usize) -> OffsetMap {
        OffsetMap {
            entries: HashMap::default(),
            hash_low: RandomState::new(),
            hash_high: RandomState::new(),
            entries_max: (budget_bytes / OFFSET_MAP_ENTRY_BYTES).max(1),
        }
    }

    fn hash(&self, key: &[u8]) -> u128 {
        let low = self.hash_low.hash_one(key);
        let high = self.hash_high.hash_one(key);
        (u128::from(high) << 64) | u128::from(low)
    }

    /// Room for `count` more keys (counting each as new).
    pub fn has_room_for(&self, count: usize) -> bool {
        self.entries.len() + count <= self.entries_max
    }

    pub fn entries_max(&self) -> usize {
        self.entries_max
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records that `key` was written at `offset` (offsets arrive in increasing order).
    pub fn put(&mut self, key: &[u8], offset: Offset) {
        let hash = self.hash(key);
        self.entries.insert(hash, offset);
    }

    /// The latest offset recorded for `key`.
    pub fn get(&self, key: &[u8]) -> Option<Offset> {
        self.entries.get(&self.hash(key)).copied()
    }

    /// Empties the map, keeping its table for the next round.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_offset_per_key_wins_and_the_budget_bounds_the_entries() {
        let mut map = OffsetMap::with_budget(10 * OFFSET_MAP_ENTRY_BYTES);
        assert_eq!(map.entries_max(), 10);
        map.put(b"a", Offset(1));
        map.put(b"b", Offset(2));
        map.put(b"a", Offset(3));
        assert_eq!(map.get(b"a"), Some(Offset(3)));
        assert_eq!(map.get(b"b"), Some(Offset(2)));
        assert_eq!(map.get(b"c"), None);
        assert_eq!(map.len(), 2);
        assert!(map.has_room_for(8));
        assert!(!map.has_room_for(9));
        map.clear();
        assert!(map.is_empty());
    }
}
