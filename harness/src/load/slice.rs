//! Which generator sends what (`towntwin load PROFILE --generator i/n`): the town's devices are numbered as
//! the town file lists them (every estate's, then every road's) and generator i sends the events of the
//! devices whose number k has k mod n = i - 1; the platform's own lines (the clock, the 12345 hotline, the
//! QR code and the patrol) and anything else go with generator 1. Every event has exactly one generator,
//! whatever n, so the slices of 1..n together are the whole traffic, each event once.

use std::collections::HashMap;

use towntwin_core::event::{HOTLINE_KIND, TOWN_AREA};
use towntwin_core::town::Town;

/// Generator `index` of `of` (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slice {
    pub index: u32,
    pub of: u32,
}

impl Slice {
    /// The whole traffic: one generator.
    pub const ALL: Slice = Slice { index: 1, of: 1 };

    /// `i/n` with 1 <= i <= n.
    pub fn parse(s: &str) -> Result<Slice, String> {
        let (i, n) = crate::experiment::parse_shard(s)?;
        Ok(Slice { index: i, of: n })
    }

    /// Whether this generator sends the platform's own lines (the clock, the hotline).
    pub fn platform(&self) -> bool {
        self.index == 1
    }
}

impl std::fmt::Display for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

/// Which generator of `of` sends an event, by its topic.
pub struct Owner {
    number: HashMap<String, usize>,
    of: u32,
}

impl Owner {
    pub fn new(town: &Town, of: u32) -> Owner {
        let number = town
            .estates
            .iter()
            .flat_map(|e| &e.devices)
            .chain(town.roads.iter().flat_map(|r| &r.devices))
            .enumerate()
            .map(|(k, d)| (d.id.clone(), k))
            .collect();
        Owner { number, of: of.max(1) }
    }

    /// The generator (1-based) that sends the event on `topic`: `{root}/{area}/{kind}/{device}/{type}`, a
    /// district's town having one more segment in front (read from the end, the root does not matter).
    pub fn of_topic(&self, topic: &str) -> u32 {
        let mut back = topic.rsplit('/').skip(1);
        let (device, kind, area) = (back.next(), back.next(), back.next());
        if area == Some(TOWN_AREA) || kind == Some(HOTLINE_KIND) {
            return 1;
        }
        device.and_then(|d| self.number.get(d)).map_or(1, |&k| (k % self.of as usize) as u32 + 1)
    }

    /// Whether `slice` sends the event on `topic`.
    pub fn sends(&self, slice: Slice, topic: &str) -> bool {
        self.of_topic(topic) == slice.index
    }

    /// Whether `slice` sends on the connection keyed `key` of a publisher with a connection per device
    /// (a device's id, `twin` for the clock, `12345` for the platform's lines).
    pub fn connects(&self, slice: Slice, key: &str) -> bool {
        match self.number.get(key) {
            Some(&k) => (k % self.of as usize) as u32 + 1 == slice.index,
            None => slice.platform(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_parse_and_refuse_what_is_out_of_range() {
        assert_eq!(Slice::parse("2/3"), Ok(Slice { index: 2, of: 3 }));
        assert!(Slice::parse("0/3").unwrap_err().contains("1 <= i <= n"));
        assert!(Slice::parse("4/3").unwrap_err().contains("4/3"));
        assert!(Slice::parse("3").unwrap_err().contains("i/n"));
        assert!(Slice::parse("a/3").unwrap_err().contains("not a number"));
    }

    #[test]
    fn every_event_has_one_generator_and_the_platform_goes_with_the_first() {
        let town = Town::load(&crate::setup::asset("assets/town.ron")).unwrap();
        let ids: Vec<&str> = town.estates.iter().flat_map(|e| &e.devices).chain(town.roads.iter().flat_map(|r| &r.devices)).map(|d| d.id.as_str()).collect();
        let owner = Owner::new(&town, 3);
        let topic = |area: &str, kind: &str, dev: &str| format!("town/{area}/{kind}/{dev}/x.y");
        let e = &town.estates[0];
        let mut per = [0usize; 3];
        for (k, id) in ids.iter().enumerate() {
            let g = owner.of_topic(&topic(&e.id, "gate", id));
            assert_eq!(g as usize, k % 3 + 1);
            per[g as usize - 1] += 1;
            assert!(owner.connects(Slice { index: g, of: 3 }, id));
            assert!(!owner.connects(Slice { index: g % 3 + 1, of: 3 }, id));
        }
        assert!(per.iter().all(|&n| n * 3 >= ids.len() - 2), "even slices: {per:?}");
        // A district's town: one more root segment.
        assert_eq!(owner.of_topic(&format!("north/town/{}/gate/{}/x.y", e.id, ids[1])), 2);
        // The clock and the estates' report lines: generator 1, and anything unknown with them.
        assert_eq!(owner.of_topic(&topic(TOWN_AREA, "clock", "twin")), 1);
        assert_eq!(owner.of_topic(&topic(&e.id, HOTLINE_KIND, "12345")), 1);
        assert_eq!(owner.of_topic(&topic(&e.id, HOTLINE_KIND, "qr")), 1);
        assert_eq!(owner.of_topic("town/nowhere/x/y/z"), 1);
        assert!(owner.connects(Slice { index: 1, of: 3 }, "twin") && !owner.connects(Slice { index: 2, of: 3 }, "twin"));
        // One generator sends everything.
        let all = Owner::new(&town, 1);
        assert!(ids.iter().all(|id| all.of_topic(&topic(&e.id, "gate", id)) == 1));
    }
}
