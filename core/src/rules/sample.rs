//! The daily sample's draw and the flats it draws from.

use serde::{Deserialize, Serialize};

use crate::event::FlatRef;

/// The day's draw: `n` distinct occupied flats, seeded by (rule id, local day) only, so anyone can
/// replay it from the rule and the date.
pub fn sample(flats: &[Vec<FlatRef>], rule: &str, day: i64, n: usize) -> Vec<(u16, FlatRef)> {
    let all: Vec<(u16, FlatRef)> = flats.iter().enumerate().flat_map(|(e, l)| l.iter().map(move |f| (e as u16, *f))).collect();
    if all.is_empty() {
        return Vec::new();
    }
    // SplitMix64 over a seed from the rule and the day: small, portable and documented.
    let mut x =
        rule.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)) ^ (day as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut chosen = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    while chosen.len() < n.min(all.len()) {
        let i = (next() % all.len() as u64) as usize;
        if seen.insert(i) {
            chosen.push(all[i]);
        }
    }
    chosen
}

/// The flats a daily sample draws from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Every occupied flat alike.
    #[default]
    All,
    /// Flats that dropped construction waste (a `construction.drop` naming the flat) within the last
    /// `within_days` come first, in a draw of their own; the rest of the day's households are drawn from all
    /// flats as with `All`.
    WasteDrops { within_days: u32 },
}
