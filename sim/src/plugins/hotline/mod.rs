//! Residents and the 12345 citizens' hotline (接诉即办): residents affected by a problem that goes on call
//! after their patience runs out (drawn per kind from the scenario's `hotline` section; some never call),
//! and again while it still goes on. A call is a `hotline.call` CloudEvent from the estate's 12345 line
//! (`town/{estate}/hotline/12345/hotline.call`) naming the kind of problem and what it is about; the core's
//! hotline rule joins it to the open order for the same problem or opens one. A problem the platform
//! solved first is never called about (未呼先应); the ground truth keeps every call's time.
//!
//! Each incident's draws come from a stream keyed by what the incident is (kind, place, subject, start),
//! not by its place in the run, so replications of different variants draw the same patience for the same
//! incident (common random numbers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use towntwin_contracts::load::Problems;

use towntwin_contracts::truth::IncidentKind;

use crate::dist::Dist;
use crate::params::{Probability, prob};

#[cfg(feature = "twin")]
pub mod plugin;

/// A synthetic kind of job for checking a crew against queueing theory: jobs arrive as a Poisson process at
/// `per_hour` (exponential gaps in continuous time, not per minute), each an incident of kind
/// `synthetic.job` in the first estate that is reported at once through the 12345 line, so the core's
/// hotline rule opens one order per job (every job has its own subject: no repeats merge). Off (0) unless a
/// scenario sets it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Synthetic {
    pub per_hour: f64,
}

/// Residents and the 12345 citizens' hotline: per incident kind, the share of incidents someone calls about
/// at all, how long after the start the first call comes (their patience, a [`Dist`] in hours), and how
/// often they call again while it goes on (`None`: once). A call made after the incident ended is not
/// made. Kinds not listed are never called about (a fire goes to 119, a dead sensor to nobody).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Hotline {
    pub patience: BTreeMap<IncidentKind, Patience>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Patience {
    pub call_share: Probability,
    pub first_call_hours: Dist,
    #[serde(default)]
    pub again_after_hours: Option<Dist>,
}

impl Default for Hotline {
    fn default() -> Self {
        let p = |share: f64, mean: f64, sd: f64, again: Option<Dist>| Patience {
            call_share: prob(share),
            first_call_hours: Dist::LogNormal { mean, sd },
            again_after_hours: again,
        };
        Hotline {
            patience: BTreeMap::from([
                (IncidentKind::GroupRental, p(0.5, 96.0, 72.0, Some(Dist::LogNormal { mean: 168.0, sd: 96.0 }))),
                (IncidentKind::RenovationIllegal, p(0.4, 48.0, 36.0, Some(Dist::LogNormal { mean: 96.0, sd: 48.0 }))),
                (IncidentKind::EbikeFlyingWire, p(0.2, 2.0, 1.5, None)),
                (IncidentKind::BinOverflow, p(0.2, 5.0, 4.0, None)),
                (IncidentKind::VulnerableEmergency, p(0.3, 30.0, 18.0, None)),
            ]),
        }
    }
}

/// Patrols (网格巡查: the grid's patrol, the property's rounds): per incident kind, the chance that a day's
/// patrol finds a problem of that kind going on in the estate, and the local hour of the round. A find is
/// filed on the estate's patrol line and reported again on later rounds while it goes on. Kinds not listed
/// are not patrolled. A patrol is no part of the platform: the town before it patrols the same.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Patrols {
    pub finds: BTreeMap<IncidentKind, Probability>,
    pub at: Option<towntwin_contracts::time::HhMm>,
}

impl Patrols {
    /// The round's local time (10:00 when not said).
    pub fn round(&self) -> towntwin_contracts::time::HhMm {
        self.at.unwrap_or(crate::params::hm(10, 0))
    }
}

/// The incident kinds that are a resident's own request (`requests`): a resident reports each one, so no
/// response can come before a report.
pub const REQUESTS: [IncidentKind; 2] = [IncidentKind::RepairNeeded, IncidentKind::ResidentQuestion];

/// Residents' requests to their estate: repairs (物业报修: a leak, a corridor light, a door closer) and
/// questions (fees, rules, a rental discussion). Each is an incident of the household's flat that goes on
/// until someone sees to it. In an estate the platform covers, a share of residents file it by the estate's
/// QR code (高行家园码) within hours, and the core's QR rule makes it an order; the rest reach the property
/// by its own channels (a phone call, the doorman), which fix a repair or answer a question in the drawn
/// days without any order. A request left unseen to is called about to 12345 as the `hotline` section's
/// patience for `repair.needed` and `resident.question` says. Off (0) unless a scenario sets it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Requests {
    pub repairs_per_household_year: f64,
    /// Days the property's own channels take to fix a repair that no order fixed (uniform).
    pub repair_fixed_days: (f64, f64),
    pub questions_per_household_year: f64,
    /// Days until a question no order answered is answered otherwise (uniform).
    pub question_answered_days: (f64, f64),
    /// In a covered estate, the share of requests filed by the QR code, and within how many hours of the
    /// need (uniform from 0).
    pub qr_share: Probability,
    pub qr_within_hours: f64,
}

impl Default for Requests {
    fn default() -> Self {
        Requests {
            repairs_per_household_year: 0.0,
            repair_fixed_days: (1.0, 6.0),
            questions_per_household_year: 0.0,
            question_answered_days: (0.5, 4.0),
            qr_share: prob(0.6),
            qr_within_hours: 4.0,
        }
    }
}

impl Requests {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        crate::params::rate(p, "requests.repairs_per_household_year", self.repairs_per_household_year);
        crate::params::rate(p, "requests.questions_per_household_year", self.questions_per_household_year);
        crate::params::days_range(p, "requests.repair_fixed_days", self.repair_fixed_days);
        crate::params::days_range(p, "requests.question_answered_days", self.question_answered_days);
        let h = self.qr_within_hours;
        p.check(h.is_finite() && (0.0..=720.0).contains(&h), || "requests.qr_within_hours".into(), || format!("expected 0..=720 hours, got {h}"));
    }
}

impl Synthetic {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        let sy = self.per_hour;
        p.check(sy.is_finite() && (0.0..=100_000.0).contains(&sy), || "synthetic.per_hour".into(), || format!("expected 0..=100000 jobs an hour, got {sy}"));
    }
}

impl Hotline {
    /// The section's checks beyond its types.
    pub(crate) fn check(&self, p: &mut Problems) {
        for (kind, pt) in &self.patience {
            for (f, d) in [("first_call_hours", Some(&pt.first_call_hours)), ("again_after_hours", pt.again_after_hours.as_ref())] {
                if let Some(d) = d
                    && let Err(msg) = d.check()
                {
                    p.push(format!("hotline.patience.{kind}.{f}"), msg);
                }
            }
            if let Some(again) = &pt.again_after_hours {
                p.check(
                    again.mean() >= 0.1,
                    || format!("hotline.patience.{kind}.again_after_hours"),
                    || "expected a mean of at least 0.1 hours between calls".into(),
                );
            }
        }
    }
}
