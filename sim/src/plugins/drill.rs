//! Operator drills: what a drill's controller injects into the running town, made real by the town's own
//! features. A resident taken ill stays home (the vulnerable feature's emergency, so the gates stop seeing
//! her and her water meter goes quiet); a fire is a ground-truth fire whose building's smoke detectors
//! sound; new faces move into a rented flat and come in through the gates; a device goes dark through the
//! devices feature. Nothing here emits a device event the features would not: the platform has to notice.
//!
//! [`crate::Twin::inject`] queues an inject; it is applied at the next tick, right after the clock. Each
//! inject's draws come from its own stream (`drill`, its number), so a drill leaves the rest of the town's
//! draws as they were. [`Applied`] says when each inject took effect and what it made, for the drill's
//! timeline.

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use towntwin_contracts::event::{Data, Direction, EventType, FlatRef, HotlineCall, Method};
use towntwin_contracts::time::{MINUTE, Millis};
use towntwin_contracts::town::DeviceKind;
use towntwin_contracts::truth::IncidentKind;

use super::Feature;
use super::devices::DeviceAction;
use super::messages::StandDown;
use super::rental::{GroupRented, Letting};
use super::residents::GateAction;
use super::safety::SafetyAction;
use super::vulnerable::VulnAction;
use crate::setup::{Flats, Members};
use crate::world::{Agenda, Ctx, HOTLINE_BASE, Household, Outbox, Presence, State, TownData, Vulnerable};

pub struct DrillPlugin;

impl Plugin for DrillPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Injections>().init_resource::<Applied>().init_resource::<StandDown>().add_systems(Update, apply.in_set(Feature::Drill));
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

/// When each inject took effect in the town, and what it made there.
#[derive(Resource, Debug, Default)]
pub struct Applied(pub Vec<Effect>);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effect {
    /// The inject's number in the drill.
    pub inject: u32,
    /// The tick it took effect in.
    pub at: Millis,
    /// What happened, for the timeline: "V0001 taken ill at home in E001 B08-505" ...
    pub what: String,
    /// Ground-truth incidents it opened (indices into [`crate::world::GroundTruth::incidents`]).
    pub incidents: Vec<usize>,
}

/// The agendas injects are put on: the features that own them make them real.
#[derive(SystemParam)]
struct Agendas<'w> {
    vulnerable: ResMut<'w, Agenda<VulnAction>>,
    safety: ResMut<'w, Agenda<SafetyAction>>,
    devices: ResMut<'w, Agenda<DeviceAction>>,
    gates: ResMut<'w, Agenda<GateAction>>,
}

/// The town the injects act on.
#[derive(SystemParam)]
struct Town<'w, 's> {
    data: Res<'w, TownData>,
    flats: Res<'w, Flats>,
    households: Query<'w, 's, (&'static Household, &'static Members), Without<GroupRented>>,
    people: Query<'w, 's, (Entity, &'static Vulnerable, &'static Presence)>,
}

fn apply(
    ctx: Ctx,
    mut injections: ResMut<Injections>,
    mut applied: ResMut<Applied>,
    mut agendas: Agendas,
    town: Town,
    mut letting: Letting,
    mut outbox: ResMut<Outbox>,
) {
    let Ctx { clock, params, reg } = &ctx;
    let now = clock.now;
    let injections = &mut *injections;
    let mut todo = std::mem::take(&mut injections.waiting);
    todo.append(&mut injections.queued);
    for (n, inject) in todo {
        let mut rng = params.rng("drill", n as u64, 0);
        let estate_of = |id: &str| reg.estate_ids.iter().position(|e| e == id).map(|i| i as u16);
        let mut effect = |what: String, incidents: Vec<usize>| applied.0.push(Effect { inject: n, at: now, what, incidents });
        match &inject {
            Inject::Incapacitate { resident, call_after_minutes } => {
                let Some(reg_index) = town.data.0.register.iter().position(|r| r.id == *resident) else { continue };
                let Some((who, _, p)) = town.people.iter().find(|(_, v, _)| v.reg == reg_index) else { continue };
                if !(p.inside && p.state == State::Normal) {
                    // Out, away or already in trouble: taken ill once she is home and well.
                    injections.waiting.push((n, inject));
                    continue;
                }
                agendas.vulnerable.push(now, VulnAction::Emergency(who));
                let entry = &town.data.0.register[reg_index];
                if let (Some(m), Some(e)) = (call_after_minutes, estate_of(&entry.estate)) {
                    // At least the next minute: she is taken ill later in this tick (the vulnerable feature runs after this one).
                    injections.calls.push(now + ((m * MINUTE as f64) as Millis).max(MINUTE), (n, reg_index, e));
                }
                effect(format!("{resident} taken ill at home in {} B{:02}-{}", entry.estate, entry.building, entry.room), Vec::new());
            }
            Inject::Fire { estate, flat } => {
                let (Some(e), Ok(f)) = (estate_of(estate), flat.parse::<FlatRef>()) else { continue };
                let i = letting.truth.instant(IncidentKind::Fire, estate, f.to_string(), now, false);
                for &d in reg.in_building(e, f.building, DeviceKind::Smoke) {
                    let delay = rng.random_range(1..=3) * MINUTE;
                    agendas.safety.push(now + delay, SafetyAction::Smoke { dev: d, obscuration_pct: rng.random_range(12.0..30.0) });
                }
                effect(format!("fire in {estate} {f}"), vec![i]);
            }
            Inject::NewFaces { estate, flat, people } => {
                let (Some(e), Ok(f)) = (estate_of(estate), flat.parse::<FlatRef>()) else { continue };
                let Some(&home) = town.flats.by_place.get(&(e, f.building, f.room)) else { continue };
                let Ok((h, members)) = town.households.get(home) else {
                    effect(format!("{estate} {f} is let by the bed already: no new faces"), Vec::new());
                    continue;
                };
                let newcomers = letting.convert(reg, home, h, members, *people, false, &mut rng);
                for &who in &newcomers {
                    let gates = reg.of(e, DeviceKind::Gate);
                    let gate = (!gates.is_empty()).then(|| gates[rng.random_range(0..gates.len())]);
                    let at = now + rng.random_range(1..=10) * MINUTE;
                    agendas.gates.push(at, GateAction { who, gate, direction: Direction::In, method: Method::Face, recognised: true, forced: true });
                }
                let i = letting.truth.open(IncidentKind::GroupRental, estate, h.label(), now, false);
                letting.commands.entity(home).insert((Members(newcomers), GroupRented { incident: i }));
                effect(format!("{people} new faces move into {estate} {f}"), vec![i]);
            }
            Inject::DeviceDark { device, hours } => {
                let Some(&dev) = reg.by_id.get(device) else { continue };
                agendas.devices.push(now, DeviceAction::Offline { dev, hours: *hours });
                effect(format!("{device} goes dark for {hours} h"), Vec::new());
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
            letting.truth.incidents[i].calls.push(t);
        }
        applied.0.push(Effect { inject: n, at: t, what: format!("a neighbour calls 12345 about {}", entry.id), incidents: v.incident.into_iter().collect() });
    }
}
