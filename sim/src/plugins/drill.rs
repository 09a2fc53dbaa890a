//! Operator drills: what a drill's controller injects into the running town, made real by the town's own
//! features. A resident taken ill stays home (the vulnerable feature's emergency, so the gates stop seeing
//! her and her water meter goes quiet); a fire is a ground-truth fire whose building's smoke detectors
//! sound; new faces move into a rented flat and come in through the gates; a device goes dark through the
//! devices feature; illegal works start in a flat (the renovation feature); an e-bike goes up in a lift or
//! charges at home (the vehicles feature); bags are dumped beside a kiosk (the garbage feature); a
//! street-order violation happens at a road camera (the fence feature). Nothing here emits a device event
//! the features would not: the platform has to notice.
//!
//! [`crate::Twin::inject`] queues an inject; it is applied at the next tick, right after the clock. Each
//! inject's draws come from its own stream (`drill`, its number), so a drill leaves the rest of the town's
//! draws as they were. [`Applied`] says when each inject took effect and what it made, for the drill's
//! timeline.

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use serde::{Deserialize, Serialize};
use towntwin_contracts::event::{Data, EventType, FlatRef, HotlineCall};
use towntwin_contracts::time::{MINUTE, Millis};
use towntwin_contracts::truth::IncidentKind;

use crate::plugins::Feature;
use crate::plugins::messages::{Applied, Asks, FireAsk, FlatAsk, InjectEffect, MoveIn, StandDown};
use crate::setup::Flats;
use crate::world::{Agenda, Ctx, HOTLINE_BASE, Outbox, Presence, State, TownData, Vulnerable};

pub struct DrillPlugin;

impl Plugin for DrillPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Injections>()
            .init_resource::<Applied>()
            .init_resource::<Asks>()
            .init_resource::<StandDown>()
            .add_systems(Update, apply.in_set(Feature::Drill));
    }
}

/// What an inject makes happen in the town.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Inject {
    /// A registered vulnerable resident (`V0007`) is taken ill at home and stops passing the gates (once
    /// she is home and well, if she is out or away now). With `call_after_minutes`, a worried neighbour
    /// calls the 12345 hotline about her that long after; without, only the platform's own rules can
    /// notice (the absence rule's 48 hours). A call comes a minute after at the soonest.
    Incapacitate {
        resident: String,
        #[serde(default)]
        call_after_minutes: Option<f64>,
    },
    /// A fire breaks out in a flat; its building's smoke detectors sound within 1-3 minutes.
    Fire { estate: String, flat: String },
    /// A group of people new to the gates moves into a rented flat (its household moves out) and comes in
    /// through the gates over the next 10 minutes.
    NewFaces { estate: String, flat: String, people: u32 },
    /// A device goes dark for this many hours (until repaired, if sooner).
    DeviceDark { device: String, hours: f64 },
    /// Illegal works (no permit) start in a flat: loud within the half hour, heard by every noise monitor
    /// of its building that is up, then as any illegal works go on (noise on working days and weekends,
    /// waste left outside the boxes) for 30 days or until an order ends them.
    IllegalWorks { estate: String, flat: String },
    /// A household carries an e-bike up in one of its building's lifts now; the lift's e-bike detector
    /// sees it, if it is up.
    EbikeInElevator { estate: String, flat: String },
    /// A household charges an e-bike at home now, for 3 to 7 hours; its building's electrical-fire monitor
    /// recognises the load, if it is up.
    IndoorCharging { estate: String, flat: String },
    /// Bags dumped beside a sorting kiosk (`E012-bin-03`) outside the fixed times; its camera sees them,
    /// if it is up. They stay until an order or a collection takes them.
    DumpedBags { kiosk: String, bags: u16 },
    /// A street-order violation at a road's electronic-fence camera (`R01-camera-001`), by its code (1 to
    /// 15: illegal parking, a non-motor vehicle in the motor lane, ...); the camera sees it, if it is up.
    FenceViolation { camera: String, code: u8 },
}

/// Injects waiting for the next tick (with their number in the drill), and those waiting for their moment
/// (a resident taken ill once she is home).
#[derive(Resource, Debug, Default)]
pub struct Injections {
    queued: Vec<(u32, Inject)>,
    waiting: Vec<(u32, Inject)>,
    /// Neighbours' calls due: (inject, register index, estate index).
    calls: Agenda<(u32, usize, u16)>,
}

impl Injections {
    pub fn push(&mut self, n: u32, inject: Inject) {
        self.queued.push((n, inject));
    }
}

/// The town the injects act on.
#[derive(SystemParam)]
struct Town<'w, 's> {
    data: Res<'w, TownData>,
    flats: Res<'w, Flats>,
    people: Query<'w, 's, (Entity, &'static Vulnerable, &'static Presence)>,
}

fn apply(
    ctx: Ctx,
    mut injections: ResMut<Injections>,
    mut applied: ResMut<Applied>,
    mut asks: ResMut<Asks>,
    town: Town,
    mut outbox: ResMut<Outbox>,
    mut truth: ResMut<crate::world::GroundTruth>,
) {
    let Ctx { clock, reg, .. } = &ctx;
    let now = clock.now;
    let injections = &mut *injections;
    let mut todo = std::mem::take(&mut injections.waiting);
    todo.append(&mut injections.queued);
    for (n, inject) in todo {
        let estate_of = |id: &str| reg.estate_ids.iter().position(|e| e == id).map(|i| i as u16);
        let mut effect = |what: String, incidents: Vec<usize>| applied.0.push(InjectEffect { inject: n, at: now, what, incidents });
        match &inject {
            Inject::Incapacitate { resident, call_after_minutes } => {
                let Some(reg_index) = town.data.0.register.iter().position(|r| r.id == *resident) else { continue };
                let Some((who, _, p)) = town.people.iter().find(|(_, v, _)| v.reg == reg_index) else { continue };
                if !(p.inside && p.state == State::Normal) {
                    // Out, away or already in trouble: taken ill once she is home and well.
                    injections.waiting.push((n, inject));
                    continue;
                }
                asks.taken_ill.push(who);
                let entry = &town.data.0.register[reg_index];
                if let (Some(m), Some(e)) = (call_after_minutes, estate_of(&entry.estate)) {
                    // At least the next minute: she is taken ill later in this tick (the vulnerable feature runs after this one).
                    injections.calls.push(now + ((m * MINUTE as f64) as Millis).max(MINUTE), (n, reg_index, e));
                }
                effect(format!("{resident} taken ill at home in {} B{:02}-{}", entry.estate, entry.building, entry.room), Vec::new());
            }
            Inject::Fire { estate, flat } => {
                let (Some(e), Ok(f)) = (estate_of(estate), flat.parse::<FlatRef>()) else { continue };
                asks.fire.push(FireAsk { inject: n, estate: e, area: estate.clone(), flat: f });
            }
            Inject::NewFaces { estate, flat, people } => {
                let (Some(e), Ok(f)) = (estate_of(estate), flat.parse::<FlatRef>()) else { continue };
                let Some(&home) = town.flats.by_place.get(&(e, f.building, f.room)) else { continue };
                asks.move_in.push(MoveIn { inject: n, home, area: estate.clone(), flat: f, people: *people });
            }
            Inject::DeviceDark { device, hours } => {
                let Some(&dev) = reg.by_id.get(device) else { continue };
                asks.dark.push((dev, *hours));
                effect(format!("{device} goes dark for {hours} h"), Vec::new());
            }
            Inject::IllegalWorks { estate, flat } | Inject::EbikeInElevator { estate, flat } | Inject::IndoorCharging { estate, flat } => {
                let (Some(e), Ok(f)) = (estate_of(estate), flat.parse::<FlatRef>()) else { continue };
                let Some(&home) = town.flats.by_place.get(&(e, f.building, f.room)) else { continue };
                let ask = FlatAsk { inject: n, home, area: estate.clone(), flat: f };
                match &inject {
                    Inject::IllegalWorks { .. } => asks.works.push(ask),
                    Inject::EbikeInElevator { .. } => asks.ebikes.push((ask, true)),
                    _ => asks.ebikes.push((ask, false)),
                }
            }
            Inject::DumpedBags { kiosk, bags } => {
                let Some(&dev) = reg.by_id.get(kiosk) else { continue };
                asks.dumped.push((n, dev, *bags));
            }
            Inject::FenceViolation { camera, code } => {
                let Some(&dev) = reg.by_id.get(camera) else { continue };
                asks.fence.push((n, dev, *code));
            }
        }
    }
    // Neighbours call about a resident still in trouble.
    for (t, (n, reg_index, e)) in injections.calls.due(now) {
        let Some((_, v, p)) = town.people.iter().find(|(_, v, _)| v.reg == reg_index) else { continue };
        if p.state != State::Emergency {
            continue;
        }
        let entry = &town.data.0.register[reg_index];
        let call = HotlineCall { category: IncidentKind::VulnerableEmergency, about: entry.id.clone() };
        outbox.emit(t, HOTLINE_BASE + e as u32, EventType::HotlineCall, None, Data::Hotline(call));
        if let Some(i) = v.incident {
            truth.incidents[i].calls.push(t);
        }
        applied.0.push(InjectEffect {
            inject: n,
            at: t,
            what: format!("a neighbour calls 12345 about {}", entry.id),
            incidents: v.incident.into_iter().collect(),
        });
    }
}
