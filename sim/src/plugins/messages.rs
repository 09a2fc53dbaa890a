//! The messages features pass each other, in one place:
//! - what a resolved work order did in the town ([`Answers`], from the responders to the feature that owns
//!   the incident);
//! - which crews stand down for a drill's trainees ([`StandDown`], from the drill to the responders);
//! - what one feature asks of another ([`Asks`]): a drill's injects, from the drill to the vulnerable,
//!   safety, devices and group-rental features; passes through the gates, from the vulnerable and
//!   group-rental features to the residents; and what an inject made happen ([`Applied`], back to the
//!   drill's timeline).
//!
//! A feature reads or writes these, never another feature's own state.

use std::collections::HashSet;

use bevy::prelude::*;
use rand::Rng as _;
use serde::Serialize;
use towntwin_contracts::event::{Direction, FlatRef, Method};
use towntwin_contracts::principal::Principal;
use towntwin_contracts::time::Millis;
use towntwin_contracts::town::DeviceKind;
use towntwin_contracts::truth::IncidentKind;

use crate::rng::Rng;
use crate::world::{Dev, Params, Registry, Resident};

/// A resolution that ended an incident this tick (see [`crate::scenario::Response`]): the feature that owns
/// the incident makes the change in the town. Filled by the responders from the core's notices, whoever
/// resolved the order; emptied at the start of the next tick.
#[derive(Resource, Debug, Default)]
pub struct Answers(pub Vec<Answer>);

#[derive(Debug, Clone)]
pub struct Answer {
    pub kind: IncidentKind,
    /// The ground-truth incident it ended (already recorded as ended by the response); `None` for a habit
    /// with no incident going on right now.
    pub incident: Option<usize>,
    pub area: String,
    pub subject: String,
    /// For a habit: when the household goes back to it.
    pub resume_at: Option<Millis>,
}

/// The crews whose principals the drill's trainees play: the twin's own responders leave their orders to
/// the trainees (see [`crate::plugins::responders`]).
#[derive(Resource, Debug, Default, Clone)]
pub struct StandDown(pub HashSet<Principal>);

/// What one feature asks of another: a drill's injects, made real by the features that own what they touch,
/// and a vulnerable resident's passes through the gates. Each feature takes its own part first thing in
/// its own set (later in the same tick when the asker runs before it, the next tick when after) and makes it
/// real as it makes its own doings real. An ask that draws random numbers carries its inject's number: the owner draws from that
/// inject's own stream (`drill`, its number), so a drill leaves the rest of the town's draws as they were.
#[derive(Resource, Debug, Default)]
pub struct Asks {
    /// Residents taken ill at home now (the vulnerable feature's emergency).
    pub taken_ill: Vec<Entity>,
    /// Fires that break out in a flat now (the safety feature).
    pub fire: Vec<FireAsk>,
    /// Devices that go dark now, for so many hours (the devices feature).
    pub dark: Vec<(Dev, f64)>,
    /// People new to the gates who move into a rented flat (the group-rental feature).
    pub move_in: Vec<MoveIn>,
    /// Passes through a gate (the residents feature): the drill's newcomers coming in, a vulnerable
    /// resident leaving for a trip or coming home.
    pub passes: Vec<(Millis, GateAction)>,
    /// Illegal works that start in a flat now (the renovation feature).
    pub works: Vec<FlatAsk>,
    /// A household's e-bike carried up in a lift now (`true`), or charged at home now (the vehicles
    /// feature).
    pub ebikes: Vec<(FlatAsk, bool)>,
    /// Bags dumped beside a sorting kiosk now: (inject, kiosk, bags) (the garbage feature).
    pub dumped: Vec<(u32, Dev, u16)>,
    /// A street-order violation at a road camera now: (inject, camera, violation code) (the fence feature).
    pub fence: Vec<(u32, Dev, u8)>,
}

/// An inject about one household's flat.
#[derive(Debug, Clone)]
pub struct FlatAsk {
    pub inject: u32,
    /// The flat's household entity.
    pub home: Entity,
    pub area: String,
    pub flat: FlatRef,
}

#[derive(Debug, Clone)]
pub struct FireAsk {
    pub inject: u32,
    pub estate: u16,
    pub area: String,
    pub flat: FlatRef,
}

#[derive(Debug, Clone)]
pub struct MoveIn {
    pub inject: u32,
    /// The flat's household entity.
    pub home: Entity,
    pub area: String,
    pub flat: FlatRef,
    pub people: u32,
}

/// When each inject took effect in the town, and what it made there, since the harness last took them.
#[derive(Resource, Debug, Default)]
pub struct Applied(pub Vec<InjectEffect>);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InjectEffect {
    /// The inject's number in the drill.
    pub inject: u32,
    /// The tick it took effect in.
    pub at: Millis,
    /// What happened, for the timeline: "V0001 taken ill at home in E001 B08-505" ...
    pub what: String,
    /// Ground-truth incidents it opened (indices into the twin's incidents).
    pub incidents: Vec<usize>,
}

/// A resident passing a gate: the residents feature's own passes, and those another feature asks of it
/// ([`Asks::passes`]). `forced` passes (leaving for a trip, coming back from hospital) happen
/// whatever the resident's state; routine ones only for residents going about their normal day.
#[derive(Debug, Clone)]
pub struct GateAction {
    pub who: Entity,
    pub gate: Option<Dev>,
    pub direction: Direction,
    pub method: Method,
    /// False when the resident walked through behind someone else and no device saw them.
    pub recognised: bool,
    pub forced: bool,
}

impl GateAction {
    /// A pass at the resident's usual gate, drawn for method and recognition.
    pub fn draw(rng: &mut Rng, params: &Params, reg: &Registry, r: &Resident, who: Entity, direction: Direction, forced: bool) -> Self {
        let cfg = &params.scenario.residents;
        let gates = reg.of(r.estate, DeviceKind::Gate);
        let gate = if rng.random_bool(0.75) || gates.is_empty() { r.usual_gate } else { Some(gates[rng.random_range(0..gates.len())]) };
        let method = if rng.random_bool(cfg.card_share.get()) { Method::Card } else { Method::Face };
        GateAction { who, gate, direction, method, recognised: !rng.random_bool(cfg.tailgate_share.get()), forced }
    }
}
