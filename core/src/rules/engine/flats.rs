//! The town's flats numbered densely, and a map keyed by (estate, flat) kept in a vector by that number:
//! the distinct-faces rule looks up a flat on every gate pass (some 430,000 a town day), and the hash
//! map's probe into some 80,000 flats was a tenth of an experiment's replication-day.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::FxMap;
use crate::event::FlatRef;
use crate::town::Town;

/// Every flat of the town's buildings, numbered estate by estate, building by building, floor by floor.
#[derive(Debug, Default)]
pub(super) struct FlatIndex {
    /// Per estate, per building number: where its flats start, its floors and flats per floor.
    estates: Vec<Vec<Option<Building>>>,
    /// Each number's (estate, flat).
    keys: Vec<(u16, FlatRef)>,
}

#[derive(Debug, Clone, Copy)]
struct Building {
    first: u32,
    floors: u16,
    per_floor: u16,
}

impl FlatIndex {
    pub(super) fn of(town: &Town) -> FlatIndex {
        let mut index = FlatIndex::default();
        for (e, estate) in town.estates.iter().enumerate() {
            let mut by_no: Vec<Option<Building>> = Vec::new();
            for b in &estate.buildings {
                let no = b.no as usize;
                if no >= by_no.len() {
                    by_no.resize(no + 1, None);
                }
                // A building number twice (a town's loading refuses it) or a hundred flats to a floor (room
                // numbers would run into the next floor's): its flats are left to the hash map.
                if by_no[no].is_some() || b.flats_per_floor >= 100 {
                    continue;
                }
                let first = index.keys.len() as u32;
                by_no[no] = Some(Building { first, floors: u16::from(b.floors), per_floor: u16::from(b.flats_per_floor) });
                index.keys.extend(b.rooms().map(|f| (e as u16, FlatRef { building: b.no, room: f.room })));
            }
            index.estates.push(by_no);
        }
        index
    }

    /// The number of `flat` in `estate`, if the town has that flat (room `floor * 100 + position`).
    pub(super) fn get(&self, estate: u16, flat: FlatRef) -> Option<u32> {
        let b = (*self.estates.get(estate as usize)?.get(flat.building as usize)?)?;
        let (floor, pos) = (flat.room / 100, flat.room % 100);
        if floor == 0 || floor > b.floors || pos == 0 || pos > b.per_floor {
            return None;
        }
        let i = b.first + u32::from(floor - 1) * u32::from(b.per_floor) + u32::from(pos - 1);
        debug_assert_eq!(self.keys.get(i as usize), Some(&(estate, flat)));
        Some(i)
    }

    fn key(&self, i: usize) -> (u16, FlatRef) {
        self.keys[i]
    }

    fn len(&self) -> usize {
        self.keys.len()
    }
}

/// A map keyed by (estate, flat): the town's flats in a vector by their number, any other flat (one an
/// event names that the town has not) in a hash map. Written and read as the sorted pairs of the hash map
/// it replaced, so snapshots are unchanged; one read back holds every pair in its hash map until the
/// engine gives it the town's index ([`FlatMap::index_by`]).
#[derive(Debug, Clone, Default)]
pub(super) struct FlatMap<V> {
    index: Option<Arc<FlatIndex>>,
    dense: Vec<Option<V>>,
    other: FxMap<(u16, FlatRef), V>,
}

impl<V: Default> FlatMap<V> {
    /// Keys the town's flats by `index` from now on (moving in any pairs held before).
    pub(super) fn index_by(&mut self, index: Arc<FlatIndex>) {
        let mut dense: Vec<Option<V>> = Vec::with_capacity(index.len());
        dense.resize_with(index.len(), || None);
        let mut other = FxMap::default();
        for (i, v) in self.dense.drain(..).enumerate() {
            if let (Some(v), Some(old)) = (v, &self.index) {
                let (e, f) = old.key(i);
                match index.get(e, f) {
                    Some(j) => dense[j as usize] = Some(v),
                    None => drop(other.insert((e, f), v)),
                }
            }
        }
        for ((e, f), v) in self.other.drain() {
            match index.get(e, f) {
                Some(j) => dense[j as usize] = Some(v),
                None => drop(other.insert((e, f), v)),
            }
        }
        *self = FlatMap { index: Some(index), dense, other };
    }

    /// The value of (estate, flat), made with its default if there is none.
    pub(super) fn entry(&mut self, estate: u16, flat: FlatRef) -> &mut V {
        match self.index.as_ref().and_then(|x| x.get(estate, flat)) {
            Some(i) => self.dense[i as usize].get_or_insert_with(V::default),
            None => self.other.entry((estate, flat)).or_default(),
        }
    }
}

impl FlatMap<super::Faces> {
    /// Reads the faces of (estate, flat) and returns something of them, for [`super::Engine::warm`] to read
    /// ahead.
    pub(super) fn touch(&self, estate: u16, flat: FlatRef) -> usize {
        let Some(i) = self.index.as_ref().and_then(|x| x.get(estate, flat)) else { return 0 };
        self.dense[i as usize].as_ref().map_or(1, super::Faces::touch)
    }
}

impl<V> FlatMap<V> {
    fn pairs(&self) -> Vec<((u16, FlatRef), &V)> {
        let mut v: Vec<((u16, FlatRef), &V)> = self.other.iter().map(|(k, v)| (*k, v)).collect();
        if let Some(index) = &self.index {
            v.extend(self.dense.iter().enumerate().filter_map(|(i, x)| Some((index.key(i), x.as_ref()?))));
        }
        v.sort_by_key(|p| p.0);
        v
    }
}

/// Equal when they hold the same pairs, wherever each is kept.
impl<V: PartialEq> PartialEq for FlatMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.pairs() == other.pairs()
    }
}

impl<V: Serialize> Serialize for FlatMap<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.pairs().serialize(s)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for FlatMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let other = super::pairs::deserialize(d)?;
        Ok(FlatMap { index: None, dense: Vec::new(), other })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn town() -> Town {
        Town::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/town.ron")).expect("the shipped town loads")
    }

    /// Every flat of the town has its own number, in the order of the town's rooms; a flat it does not have
    /// (a floor or a position past the building's, floor 0, an unknown building or estate) has none.
    #[test]
    fn every_flat_of_the_town_is_numbered_and_no_other() {
        let town = town();
        let index = FlatIndex::of(&town);
        let mut n = 0u32;
        for (e, estate) in town.estates.iter().enumerate() {
            for b in &estate.buildings {
                for f in b.rooms() {
                    assert_eq!(index.get(e as u16, FlatRef { building: b.no, room: f.room }), Some(n));
                    n += 1;
                }
                let top = u16::from(b.floors) * 100 + u16::from(b.flats_per_floor);
                for room in [0, 1, 100, 199, u16::from(b.flats_per_floor) + 101, top + 100, u16::MAX] {
                    if b.rooms().any(|f| f.room == room) {
                        continue;
                    }
                    assert_eq!(index.get(e as u16, FlatRef { building: b.no, room }), None, "{} B{} {room}", estate.id, b.no);
                }
            }
            assert_eq!(index.get(e as u16, FlatRef { building: u16::MAX, room: 101 }), None);
        }
        assert_eq!(n as usize, index.len());
        assert!(n > 50_000, "the town's flats: {n}");
        assert_eq!(index.get(town.estates.len() as u16, FlatRef { building: 1, room: 101 }), None);
    }

    /// With the index or without it, and indexed after it was filled (a snapshot read back), a map holds
    /// and writes the same pairs, sorted, as a hash map would; a flat the town lacks is kept too.
    #[test]
    fn a_flat_map_writes_the_same_pairs_however_it_keeps_them() {
        let index = Arc::new(FlatIndex::of(&town()));
        let keys = [
            (0u16, FlatRef { building: 1, room: 101 }),
            (3, FlatRef { building: 2, room: 302 }),
            (1, FlatRef { building: 999, room: 101 }),
            (0, FlatRef { building: 1, room: 9_999 }),
        ];
        let mut indexed: FlatMap<Vec<u32>> = FlatMap::default();
        indexed.index_by(index.clone());
        let mut plain: FlatMap<Vec<u32>> = FlatMap::default();
        let mut reference: FxMap<(u16, FlatRef), Vec<u32>> = FxMap::default();
        for (i, &(e, f)) in keys.iter().enumerate().chain(keys.iter().enumerate().rev()) {
            indexed.entry(e, f).push(i as u32);
            plain.entry(e, f).push(i as u32);
            reference.entry((e, f)).or_default().push(i as u32);
        }
        assert!(indexed.dense.iter().flatten().count() >= 2 && !indexed.other.is_empty(), "kept both ways");
        let written = serde_json::to_string(&indexed).unwrap();
        let mut sorted: Vec<_> = reference.iter().collect();
        sorted.sort_by_key(|p| *p.0);
        assert_eq!(written, serde_json::to_string(&sorted).unwrap());
        assert_eq!(serde_json::to_string(&plain).unwrap(), written);
        assert!(indexed == plain);
        let mut back: FlatMap<Vec<u32>> = serde_json::from_str(&written).unwrap();
        assert!(back == indexed);
        back.index_by(index.clone());
        assert!(back == indexed);
        assert_eq!(back.dense.iter().flatten().count(), indexed.dense.iter().flatten().count());
        assert_eq!(serde_json::to_string(&back).unwrap(), written);
        back.entry(keys[0].0, keys[0].1).push(99);
        assert!(back != indexed);
    }
}
