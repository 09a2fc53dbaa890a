//! A flat's faces for the distinct-faces rule: each person seen with their last time, in the order first
//! seen. Most flats (a household and its regular visitors) hold a handful, kept in one cache line with their
//! times as exact offsets from a base; a flat with more, or with times too far apart for 32-bit offsets,
//! keeps them on the heap. The rule looks a flat up on every gate pass (some 430,000 a town day), and the
//! vector it replaced took two to three cache lines a pass: a tenth of a 35-day replication waited on them.

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// Faces held in the line.
const NEAR: usize = 6;

/// Half the reach of an offset.
const HALF: Millis = (u32::MAX / 2) as Millis;

/// A flat's faces: (person, last seen), in the order first seen.
#[derive(Debug, Clone)]
#[repr(align(64))]
pub(super) struct Faces(Kept);

#[derive(Debug, Clone)]
enum Kept {
    /// Up to [`NEAR`] faces, each at time `base + offset` exactly.
    Near { len: u8, base: Millis, faces: [(u32, u32); NEAR] },
    /// Any number, at any times.
    Far(Vec<(u32, Millis)>),
}

impl Default for Faces {
    fn default() -> Faces {
        Faces(Kept::Near { len: 0, base: 0, faces: [(0, 0); NEAR] })
    }
}

impl Faces {
    pub(super) fn len(&self) -> usize {
        match &self.0 {
            Kept::Near { len, .. } => usize::from(*len),
            Kept::Far(v) => v.len(),
        }
    }

    /// Each (person, last seen), in the order first seen.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, Millis)> + '_ {
        let (base, near, far) = match &self.0 {
            Kept::Near { len, base, faces } => (*base, &faces[..usize::from(*len)], &[][..]),
            Kept::Far(v) => (0, &[][..], &v[..]),
        };
        near.iter().map(move |&(p, off)| (p, base + Millis::from(off))).chain(far.iter().copied())
    }

    /// Notes `person` seen at `time`: their last time becomes the later of the two; a new person is added
    /// last.
    pub(super) fn see(&mut self, person: u32, time: Millis) {
        match &mut self.0 {
            Kept::Far(v) => {
                see_in(v, person, time);
                return;
            }
            Kept::Near { len: len @ 0, base, faces } => {
                // The first: half the offsets' reach below it, so that later and earlier times fit too.
                *base = time.saturating_sub(HALF);
                faces[0] = (person, (time - *base) as u32);
                *len = 1;
                return;
            }
            Kept::Near { len, base, faces } => {
                let n = usize::from(*len);
                match (faces[..n].iter().position(|f| f.0 == person), offset(*base, time)) {
                    (Some(i), Some(off)) => {
                        faces[i].1 = faces[i].1.max(off);
                        return;
                    }
                    // Before the base: before the time kept.
                    (Some(_), None) if time < *base => return,
                    (None, Some(off)) if n < NEAR => {
                        faces[n] = (person, off);
                        *len += 1;
                        return;
                    }
                    _ => {}
                }
            }
        }
        // Out of the line's reach (a seventh face, or a time past the offsets'): kept again, rebased or on
        // the heap.
        let mut all: Vec<(u32, Millis)> = self.iter().collect();
        see_in(&mut all, person, time);
        *self = Faces::of(all);
    }

    /// Keeps only the faces last seen after `cut`.
    pub(super) fn retain_after(&mut self, cut: Millis) {
        match &mut self.0 {
            Kept::Near { len, base, faces } => {
                let n = usize::from(*len);
                // Every face is seen after the base: nothing to drop while the cut is before it.
                if cut < *base {
                    return;
                }
                let mut kept = 0;
                for i in 0..n {
                    if *base + Millis::from(faces[i].1) > cut {
                        faces[kept] = faces[i];
                        kept += 1;
                    }
                }
                *len = kept as u8;
            }
            Kept::Far(v) => {
                let before = v.len();
                v.retain(|f| f.1 > cut);
                if v.len() < before && v.len() <= NEAR {
                    *self = Faces::of(std::mem::take(v));
                }
            }
        }
    }

    /// Reads what [`Faces::see`] will read (the line, or each line of the heap) and returns something of
    /// it, for the engine's read-ahead.
    pub(super) fn touch(&self) -> usize {
        match &self.0 {
            Kept::Near { len, .. } => usize::from(*len),
            // Four faces to a cache line.
            Kept::Far(v) => v.len() + v.iter().step_by(4).map(|f| f.0 as usize).sum::<usize>(),
        }
    }

    /// Faces kept as `all` holds them (in its order, duplicates and all): in the line if they fit.
    fn of(all: Vec<(u32, Millis)>) -> Faces {
        if all.len() <= NEAR
            && let (Some(lo), Some(hi)) = (all.iter().map(|f| f.1).min(), all.iter().map(|f| f.1).max())
            && hi.checked_sub(lo).is_some_and(|span| span <= Millis::from(u32::MAX))
        {
            // The base as far below the earliest as the span leaves room for, so later times fit too.
            let base = lo.saturating_sub((Millis::from(u32::MAX) - (hi - lo)) / 2);
            let mut faces = [(0, 0); NEAR];
            for (slot, &(p, t)) in faces.iter_mut().zip(&all) {
                *slot = (p, (t - base) as u32);
            }
            return Faces(Kept::Near { len: all.len() as u8, base, faces });
        }
        if all.is_empty() {
            return Faces::default();
        }
        Faces(Kept::Far(all))
    }
}

/// [`Faces::see`] on faces kept as a vector.
fn see_in(faces: &mut Vec<(u32, Millis)>, person: u32, time: Millis) {
    match faces.iter_mut().find(|f| f.0 == person) {
        Some(f) => f.1 = f.1.max(time),
        None => faces.push((person, time)),
    }
}

/// `time` as an offset from `base`, if it is one.
fn offset(base: Millis, time: Millis) -> Option<u32> {
    time.checked_sub(base).and_then(|d| u32::try_from(d).ok())
}

/// Equal when they hold the same faces at the same times in the same order, however kept.
impl PartialEq for Faces {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// Written and read as the vector of (person, last seen) pairs it replaced, so snapshots are unchanged.
impl Serialize for Faces {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Faces {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Faces::of(Vec::<(u32, Millis)>::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::time::DAY;

    /// The vector the faces replaced, and the rule's steps on it.
    fn see(v: &mut Vec<(u32, Millis)>, person: u32, time: Millis) {
        match v.iter_mut().find(|f| f.0 == person) {
            Some(f) => f.1 = f.1.max(time),
            None => v.push((person, time)),
        }
    }

    #[test]
    fn one_cache_line() {
        assert_eq!(std::mem::size_of::<Option<Faces>>(), 64);
    }

    /// Against the plain vector, step by step: households and crowds, times close together, days apart,
    /// out of order, before 1970 and near the ends of the range, windows short and beyond the offsets'
    /// reach.
    #[test]
    fn keeps_what_the_vector_kept() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for round in 0..3_000 {
            let people = [3u32, 6, 7, 12][round % 4];
            let step: Millis = [1_000, 3_600_000, 5 * DAY, 40 * DAY][round / 4 % 4];
            let window: Millis = [DAY, 30 * DAY, 60 * DAY, 400 * DAY][round / 16 % 4];
            let mut time: Millis = [0, -90 * DAY, 1_700_000_000_000, Millis::MAX / 2][round / 64 % 4];
            let (mut faces, mut want) = (Faces::default(), Vec::new());
            for _ in 0..rng.random_range(1..60) {
                time += rng.random_range(0..=step);
                // Now and then an event from a little back (the core's window takes late ones).
                let at = if rng.random_bool(0.2) { time - rng.random_range(0..=step) } else { time };
                let person = rng.random_range(0..people);
                faces.see(person, at);
                see(&mut want, person, at);
                let cut = time - window;
                faces.retain_after(cut);
                want.retain(|f| f.1 > cut);
                assert_eq!(faces.iter().collect::<Vec<_>>(), want, "round {round}");
                assert_eq!(faces.len(), want.len());
                let json = serde_json::to_string(&faces).expect("faces serialise");
                assert_eq!(json, serde_json::to_string(&want).expect("a vector serialises"));
                let back: Faces = serde_json::from_str(&json).expect("faces read back");
                assert_eq!(back, faces);
            }
        }
    }

    #[test]
    fn the_extremes_of_time() {
        let mut faces = Faces::default();
        faces.see(1, Millis::MIN);
        faces.see(2, Millis::MAX);
        faces.see(1, 0);
        assert_eq!(faces.iter().collect::<Vec<_>>(), vec![(1, 0), (2, Millis::MAX)]);
        faces.retain_after(Millis::MAX - 1);
        assert_eq!(faces.iter().collect::<Vec<_>>(), vec![(2, Millis::MAX)]);
        let mut one = Faces::default();
        one.see(5, Millis::MIN);
        one.see(5, Millis::MIN + 1);
        assert_eq!(one.iter().collect::<Vec<_>>(), vec![(5, Millis::MIN + 1)]);
    }
}
