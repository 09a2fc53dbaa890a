//! The 15 kinds of road violation the electronic fences recognise, as the town's city-management
//! department (城管) classifies street order. The source says "15 common violations" without naming them;
//! these are the usual categories of Shanghai's street-order video recognition.

/// One violation kind: code, name, share of all violations at baseline, and its hours of activity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Violation {
    pub code: u8,
    pub name: &'static str,
    /// Share of all recognised violations at baseline (the 15 shares sum to 1).
    pub share: f64,
    /// Which diurnal profile the kind follows.
    pub profile: Profile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Traffic-like: morning and evening peaks.
    Traffic,
    /// Trading hours: late morning to evening.
    Trade,
    /// Night-heavy (muck trucks run at night, night markets).
    Night,
    /// Flat through the day, low at night.
    Daytime,
}

pub const VIOLATIONS: [Violation; 15] = [
    Violation { code: 1, name: "illegal_parking", share: 0.22, profile: Profile::Traffic },
    Violation { code: 2, name: "non_motor_in_motor_lane", share: 0.12, profile: Profile::Traffic },
    Violation { code: 3, name: "shared_bike_disorder", share: 0.11, profile: Profile::Traffic },
    Violation { code: 4, name: "shop_front_trading", share: 0.09, profile: Profile::Trade },
    Violation { code: 5, name: "street_vending", share: 0.08, profile: Profile::Trade },
    Violation { code: 6, name: "exposed_garbage", share: 0.07, profile: Profile::Daytime },
    Violation { code: 7, name: "overflowing_litter_bin", share: 0.05, profile: Profile::Daytime },
    Violation { code: 8, name: "piled_materials", share: 0.05, profile: Profile::Daytime },
    Violation { code: 9, name: "street_hanging_laundry", share: 0.04, profile: Profile::Daytime },
    Violation { code: 10, name: "illegal_advertising", share: 0.04, profile: Profile::Daytime },
    Violation { code: 11, name: "banner_hanging", share: 0.03, profile: Profile::Daytime },
    Violation { code: 12, name: "muck_truck_spill", share: 0.03, profile: Profile::Night },
    Violation { code: 13, name: "road_occupation_construction", share: 0.03, profile: Profile::Daytime },
    Violation { code: 14, name: "open_burning", share: 0.02, profile: Profile::Night },
    Violation { code: 15, name: "missing_manhole_cover", share: 0.02, profile: Profile::Daytime },
];

impl Profile {
    /// Relative rate by local hour (0..24); each profile's weights average 1 over the day.
    pub fn weight(self, hour: u32) -> f64 {
        let raw: [f64; 24] = match self {
            Profile::Traffic => [0.2, 0.1, 0.1, 0.1, 0.1, 0.3, 0.8, 2.0, 2.4, 1.5, 1.1, 1.1, 1.2, 1.1, 1.1, 1.2, 1.5, 2.2, 2.4, 1.6, 1.2, 0.9, 0.6, 0.4],
            Profile::Trade => [0.2, 0.1, 0.0, 0.0, 0.0, 0.1, 0.4, 0.9, 1.2, 1.4, 1.6, 1.7, 1.6, 1.4, 1.3, 1.4, 1.6, 1.9, 2.1, 2.0, 1.8, 1.4, 0.8, 0.4],
            Profile::Night => [2.4, 2.4, 2.2, 2.0, 1.5, 0.8, 0.4, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.4, 0.6, 0.9, 1.3, 1.8, 2.2, 2.4],
            Profile::Daytime => [0.2, 0.1, 0.1, 0.1, 0.1, 0.3, 0.8, 1.3, 1.5, 1.6, 1.6, 1.5, 1.4, 1.5, 1.6, 1.6, 1.5, 1.4, 1.2, 1.0, 0.8, 0.6, 0.4, 0.3],
        };
        let mean: f64 = raw.iter().sum::<f64>() / 24.0;
        raw[hour as usize % 24] / mean
    }
}

/// The violation with this code, if any.
pub fn by_code(code: u8) -> Option<&'static Violation> {
    VIOLATIONS.iter().find(|v| v.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_kinds_whose_shares_sum_to_one() {
        assert_eq!(VIOLATIONS.len(), 15);
        let s: f64 = VIOLATIONS.iter().map(|v| v.share).sum();
        assert!((s - 1.0).abs() < 1e-9, "{s}");
        for p in [Profile::Traffic, Profile::Trade, Profile::Night, Profile::Daytime] {
            let m: f64 = (0..24).map(|h| p.weight(h)).sum::<f64>() / 24.0;
            assert!((m - 1.0).abs() < 1e-9);
        }
    }
}
