//! The window of recent event ids: a duplicate delivery is refused as long as the time window could let it in.

use super::*;

/// The ids a store-less core has accepted, for dedup, kept only as long as a duplicate could still get
/// through the time window: an event more than `behind_hours` older than the clock is refused as
/// `out_of_window` anyway. Two generations, rotated when the clock has moved a whole window (plus its
/// `ahead` part) since the last rotation, so an id is kept at least that long after it was accepted and
/// memory stays bounded over runs of many days (an experiment's core has no store).
#[derive(Debug, Default)]
pub(super) struct RecentIds {
    current: HashSet<u128, KeyHash>,
    previous: HashSet<u128, KeyHash>,
    rotated_at: Millis,
}

/// The keys of [`RecentIds`] are already hashes: the set uses their low bits as they are.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHash;

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

#[derive(Debug, Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed here; any other input is folded in whole.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

impl RecentIds {
    /// Whether `key` is new; `now` is the core's clock when it arrives.
    /// The dedup key of (source, id) as 128 bits of two SipHash passes: no allocation per event, and a
    /// false duplicate would need a 128-bit collision (about 10^-26 for a town day's million ids). The store
    /// keeps and checks the ids themselves.
    pub(super) fn key(source: &str, id: &str) -> u128 {
        use std::hash::{Hash, Hasher};
        let mut a = std::collections::hash_map::DefaultHasher::new();
        (source, id).hash(&mut a);
        let mut b = std::collections::hash_map::DefaultHasher::new();
        (id, source, 0x9e37_79b9_u32).hash(&mut b);
        (a.finish() as u128) << 64 | b.finish() as u128
    }

    pub(super) fn insert(&mut self, key: u128, now: Millis, window: &TimeWindow) -> bool {
        let span = window.behind_hours as Millis * crate::time::HOUR + (window.ahead_minutes as Millis + 1) * crate::time::MINUTE;
        if now - self.rotated_at > span {
            let cap = self.current.len();
            self.previous = std::mem::replace(&mut self.current, HashSet::with_capacity_and_hasher(cap, KeyHash));
            self.rotated_at = now;
        }
        !self.previous.contains(&key) && self.current.insert(key)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}
