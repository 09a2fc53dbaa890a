//! The rental feature's plugin and systems; its parameters are in [`super`].

use bevy::ecs::system::SystemParam;
use bevy::prelude::*;
use rand::Rng as _;
use towntwin_contracts::town::Tenure;
use towntwin_contracts::truth::IncidentKind;

use towntwin_contracts::event::{Direction, Method};
use towntwin_contracts::time::MINUTE;

use crate::plugins::messages::{Answers, Applied, Asks, GateAction, InjectEffect};
use crate::plugins::{Feature, day_start};
use crate::setup::{Flats, Members, NextPid};
use crate::world::{Age, Clock, Ctx, GroundTruth, Household, Params, Presence, Registry, Resident, State, Vulnerable, in_order, poisson};

pub struct RentalPlugin;

impl Plugin for RentalPlugin {
    fn build(&self, app: &mut App) {
        app.add_systems(Startup, seed_group_rentals.in_set(Feature::Rental))
            .add_systems(Update, (move_in, answer, (new_group_rentals, churn).chain().run_if(day_start)).chain().in_set(Feature::Rental));
    }
}

/// Marks a flat as group-rented, with its ground-truth incident.
#[derive(Component, Debug, Clone)]
pub struct GroupRented {
    pub incident: usize,
}

fn is_rented(h: &Household) -> bool {
    matches!(h.tenure, Tenure::RegisteredTenant | Tenure::UnregisteredOccupant)
}

/// What letting flats by the bed changes: residents replaced (newcomers get new person ids), and the ground
/// truth of each group rental.
#[derive(SystemParam)]
struct Letting<'w, 's> {
    commands: Commands<'w, 's>,
    pid: ResMut<'w, NextPid>,
    truth: ResMut<'w, GroundTruth>,
}

impl Letting<'_, '_> {
    /// Replaces a flat's household with `n` bed-space tenants, at home (`inside`) or about to arrive.
    #[allow(clippy::too_many_arguments)]
    fn convert(&mut self, reg: &Registry, flat: Entity, h: &Household, members: &Members, n: u32, inside: bool, rng: &mut crate::rng::Rng) -> Vec<Entity> {
        let Letting { commands, pid, .. } = self;
        for m in &members.0 {
            commands.entity(*m).despawn();
        }
        let gates = reg.of(h.estate, towntwin_contracts::town::DeviceKind::Gate);
        (0..n)
            .map(|_| {
                let usual_gate = (!gates.is_empty()).then(|| gates[rng.random_range(0..gates.len())]);
                commands
                    .spawn((
                        Resident { pid: pid.take(), age: Age::Adult, flat, home: h.flat, estate: h.estate, usual_gate },
                        Presence { inside, state: State::Normal },
                    ))
                    .id()
            })
            .collect()
    }
}

/// New faces a drill moves into a rented flat: its household moves out, and the newcomers come in through
/// the estate's gates over the next 10 minutes.
fn move_in(
    ctx: Ctx,
    mut asks: ResMut<Asks>,
    mut applied: ResMut<Applied>,
    households: Query<(&Household, &Members), Without<GroupRented>>,
    mut letting: Letting,
) {
    let Ctx { clock, params, reg } = &ctx;
    let now = clock.now;
    let asked = std::mem::take(&mut asks.move_in);
    for m in asked {
        let mut rng = params.rng("drill", m.inject as u64, 0);
        let effect = |what: String, incidents: Vec<usize>| InjectEffect { inject: m.inject, at: now, what, incidents };
        let Ok((h, members)) = households.get(m.home) else {
            applied.0.push(effect(format!("{} {} is let by the bed already: no new faces", m.area, m.flat), Vec::new()));
            continue;
        };
        let newcomers = letting.convert(reg, m.home, h, members, m.people, false, &mut rng);
        let gates = reg.of(h.estate, towntwin_contracts::town::DeviceKind::Gate);
        for &who in &newcomers {
            let gate = (!gates.is_empty()).then(|| gates[rng.random_range(0..gates.len())]);
            let at = now + rng.random_range(1..=10) * MINUTE;
            asks.passes.push((at, GateAction { who, gate, direction: Direction::In, method: Method::Face, recognised: true, forced: true }));
        }
        let i = letting.truth.open(IncidentKind::GroupRental, &m.area, h.label(), now, false);
        letting.commands.entity(m.home).insert((Members(newcomers), GroupRented { incident: i }));
        applied.0.push(effect(format!("{} new faces move into {} {}", m.people, m.area, m.flat), vec![i]));
    }
}

fn seed_group_rentals(ctx: Ctx, flats: Res<Flats>, households: Query<(&Household, &Members)>, registered: Query<(), With<Vulnerable>>, mut letting: Letting) {
    let Ctx { clock, params, reg } = &ctx;
    let cfg = &params.scenario.group_rental;
    for (ei, list) in flats.by_estate.iter().enumerate() {
        let mut rng = params.rng("rental.seed", ei as u64, 0);
        for &flat in list {
            let Ok((h, members)) = households.get(flat) else { continue };
            if !is_rented(h) || members.0.iter().any(|m| registered.contains(*m)) || !rng.random_bool(cfg.share_of_rented.get()) {
                continue;
            }
            let n = rng.random_range(cfg.occupants.0..=cfg.occupants.1);
            let new = letting.convert(reg, flat, h, members, n, true, &mut rng);
            let incident = letting.truth.open(IncidentKind::GroupRental, &reg.estate_ids[ei], h.label(), clock.start, false);
            letting.commands.entity(flat).insert((Members(new), GroupRented { incident }));
        }
    }
}

fn new_group_rentals(
    ctx: Ctx,
    flats: Res<Flats>,
    households: Query<(&Household, &Members), Without<GroupRented>>,
    registered: Query<(), With<Vulnerable>>,
    mut letting: Letting,
) {
    let Ctx { clock, params, reg } = &ctx;
    let cfg = &params.scenario.group_rental;
    let mut rng = params.rng("rental.new", 0, clock.day);
    for _ in 0..poisson(&mut rng, cfg.new_per_week / 7.0) {
        let ei = rng.random_range(0..flats.by_estate.len());
        let list = &flats.by_estate[ei];
        if list.is_empty() {
            continue;
        }
        // Try a few flats of the estate for a rented one not already let by the bed.
        for _ in 0..20 {
            let flat = list[rng.random_range(0..list.len())];
            let Ok((h, members)) = households.get(flat) else { continue };
            if !is_rented(h) || members.0.iter().any(|m| registered.contains(*m)) {
                continue;
            }
            let n = rng.random_range(cfg.occupants.0..=cfg.occupants.1);
            let new = letting.convert(reg, flat, h, members, n, true, &mut rng);
            let at = clock.now + rng.random_range(8..20) * 3_600_000;
            let incident = letting.truth.open(IncidentKind::GroupRental, &reg.estate_ids[ei], h.label(), at, false);
            letting.commands.entity(flat).insert((Members(new), GroupRented { incident }));
            break;
        }
    }
}

/// Bed-space tenants come and go: each day some leave and newcomers, with new faces, take their place.
fn churn(
    mut commands: Commands,
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    mut pid: ResMut<NextPid>,
    mut flats: Query<(Entity, &Household, &mut Members), With<GroupRented>>,
) {
    let cfg = &params.scenario.group_rental;
    let gates_of = |e: u16| reg.of(e, towntwin_contracts::town::DeviceKind::Gate);
    for (flat, h, mut members) in in_order(flats.iter_mut(), |x| x.1.key()) {
        let mut rng = params.rng("rental.churn", h.key(), clock.day);
        for _ in 0..poisson(&mut rng, cfg.churn_per_week / 7.0) {
            if members.0.is_empty() {
                break;
            }
            let k = rng.random_range(0..members.0.len());
            let leaving = members.0.swap_remove(k);
            commands.entity(leaving).despawn();
            let gates = gates_of(h.estate);
            let usual_gate = (!gates.is_empty()).then(|| gates[rng.random_range(0..gates.len())]);
            let newcomer = commands
                .spawn((
                    Resident { pid: pid.take(), age: Age::Adult, flat, home: h.flat, estate: h.estate, usual_gate },
                    Presence { inside: true, state: State::Normal },
                ))
                .id();
            members.0.push(newcomer);
        }
    }
}

/// A group rental a response ended is cleared: the bed-space tenants leave but two, who stay as an ordinary
/// household, and the faces stop changing.
fn answer(mut commands: Commands, answers: Res<Answers>, mut flats: Query<(Entity, &GroupRented, &mut Members)>) {
    for a in answers.0.iter().filter(|a| a.kind == IncidentKind::GroupRental) {
        let Some(i) = a.incident else { continue };
        let Some((flat, _, mut members)) = flats.iter_mut().find(|(_, g, _)| g.incident == i) else { continue };
        let keep = 2.min(members.0.len());
        for m in members.0.drain(keep..) {
            commands.entity(m).despawn();
        }
        commands.entity(flat).remove::<GroupRented>();
    }
}
