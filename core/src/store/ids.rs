//! The dedup index of the event log, kept in memory.

use std::collections::HashMap;

/// The ids of the logged events, in memory, for dedup without an index on the log: a unique index on the
/// id text costs a random B-tree page per event in every commit and every checkpoint, which was the largest
/// cost of ingest. Ids are kept as 64-bit hashes with the sequence of their event; a hash seen before is
/// checked against the stored id (a primary-key read), so dedup stays exact. Rebuilt from the log on open.
///
/// In 256 shards by the hash's top byte: a single map of millions doubles in one go, and at 1,835,008 ids
/// that rehash held the writer 130-330 ms (every 60,000-events/s load run had its worst latency there);
/// a shard holds 1/256 of them, and the shards reach their limits spread over a few hundred thousand events.
#[derive(Debug)]
pub(super) struct Ids {
    shards: Vec<IdShard>,
}

#[derive(Debug, Default)]
struct IdShard {
    first: HashMap<u64, i64, rustc_hash::FxBuildHasher>,
    /// Further events whose ids hash alike (almost never).
    more: HashMap<u64, Vec<i64>, rustc_hash::FxBuildHasher>,
}

impl Default for Ids {
    fn default() -> Ids {
        Ids { shards: (0..256).map(|_| IdShard::default()).collect() }
    }
}

impl Ids {
    pub(super) fn hash(id: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        id.hash(&mut h);
        h.finish()
    }

    /// The shard of a hash: its top byte.
    fn at(h: u64) -> usize {
        (h >> 56) as usize
    }

    fn shard(&mut self, h: u64) -> &mut IdShard {
        &mut self.shards[Ids::at(h)]
    }

    pub(super) fn insert(&mut self, h: u64, seq: i64) {
        let shard = self.shard(h);
        match shard.first.entry(h) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(seq);
            }
            std::collections::hash_map::Entry::Occupied(_) => shard.more.entry(h).or_default().push(seq),
        }
    }

    pub(super) fn remove(&mut self, h: u64, seq: i64) {
        let shard = self.shard(h);
        if let Some(v) = shard.more.get_mut(&h) {
            v.retain(|s| *s != seq);
            if v.is_empty() {
                shard.more.remove(&h);
            }
        }
        if shard.first.get(&h) == Some(&seq) {
            shard.first.remove(&h);
            if let Some(mut v) = shard.more.remove(&h)
                && let Some(s) = v.pop()
            {
                shard.first.insert(h, s);
                if !v.is_empty() {
                    shard.more.insert(h, v);
                }
            }
        }
    }

    pub(super) fn candidates(&self, h: u64) -> impl Iterator<Item = i64> + '_ {
        let shard = &self.shards[Ids::at(h)];
        shard.first.get(&h).copied().into_iter().chain(shard.more.get(&h).into_iter().flatten().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids whose hashes collide keep every sequence, in any shard, and a rolled-back one is taken out alone.
    #[test]
    fn ids_keep_colliding_hashes_apart_across_shards() {
        let mut ids = Ids::default();
        let (a, b) = (0x01u64 << 56 | 7, 0xfeu64 << 56 | 7);
        ids.insert(a, 1);
        ids.insert(a, 2);
        ids.insert(a, 3);
        ids.insert(b, 4);
        assert_eq!(ids.candidates(a).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(ids.candidates(b).collect::<Vec<_>>(), vec![4], "another shard, the same low bits");
        ids.remove(a, 1);
        let mut left: Vec<i64> = ids.candidates(a).collect();
        left.sort();
        assert_eq!(left, vec![2, 3]);
        ids.remove(a, 3);
        ids.remove(a, 2);
        assert_eq!(ids.candidates(a).count(), 0);
        assert_eq!(ids.candidates(b).collect::<Vec<_>>(), vec![4]);
        // Many ids spread over the shards and are all found.
        for n in 0..10_000i64 {
            ids.insert(Ids::hash(&format!("src id-{n}")), n + 10);
        }
        assert!(ids.shards.iter().all(|s| !s.first.is_empty()), "every shard used");
        for n in 0..10_000i64 {
            assert!(ids.candidates(Ids::hash(&format!("src id-{n}"))).any(|s| s == n + 10));
        }
    }
}
