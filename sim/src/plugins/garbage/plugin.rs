//! The garbage feature's plugin and systems; its parameters are in [`super`].

use bevy::prelude::*;
use rand::Rng as _;
use towntwin_contracts::event::{BinDrop, BinLevel, Data, Dumping, EventType, WasteCategory};
use towntwin_contracts::town::{DeviceKind, Tenure};
use towntwin_contracts::truth::IncidentKind;

use crate::generate::pick;
use crate::plugins::messages::Answers;
use crate::plugins::{Feature, day_start};
use crate::world::{Agenda, Clock, Ctx, Dev, Health, Household, Params, Record, Registry, at_hours, in_order, poisson};

pub struct GarbagePlugin;

impl Plugin for GarbagePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Agenda<BinAction>>()
            .add_systems(Startup, add_bin_state.in_set(Feature::Garbage))
            .init_resource::<Agenda<Relapse>>()
            .add_systems(Update, (take_asks, answer, persuade, points.run_if(day_start), plan_day.run_if(day_start), act).chain().in_set(Feature::Garbage));
    }
}

/// Bags a drill dumps beside a kiosk now: an incident unless bags are there already; the kiosk's camera,
/// if up, sees them.
fn take_asks(
    ctx: Ctx,
    mut asks: ResMut<crate::plugins::messages::Asks>,
    mut bins: Query<(&Health, &mut BinState)>,
    mut rec: Record,
    mut applied: ResMut<crate::plugins::messages::Applied>,
) {
    let Ctx { clock, reg, .. } = &ctx;
    let Record { truth, outbox } = &mut rec;
    for (inject, bin, bags) in asks.dumped.drain(..) {
        let Ok((health, mut state)) = bins.get_mut(reg.entity[bin as usize]) else { continue };
        let d = &reg.devices[bin as usize];
        if state.dumping.is_none_or(|i| truth.incidents[i].end_ms.is_some()) {
            state.dumping = Some(truth.open(IncidentKind::GarbageDumping, &d.area, d.id.to_string(), clock.now, false));
        }
        if health.senses() {
            outbox.emit(clock.now, bin, EventType::BinDumping, None, Data::Dumping(Dumping { bags }));
        }
        let what = format!("{bags} bag(s) dumped beside {}", d.id);
        applied.0.push(crate::plugins::messages::InjectEffect { inject, at: clock.now, what, incidents: state.dumping.into_iter().collect() });
    }
}

/// A kiosk's fill, in drops since its last collection.
#[derive(Component, Debug, Clone, Default)]
pub struct BinState {
    pub drops: u32,
    pub overflow: Option<usize>,
    /// The incident of bags dumped beside it, while they are there.
    pub dumping: Option<usize>,
}

#[derive(Debug, Clone)]
pub enum BinAction {
    Drop {
        flat: Entity,
        bin: Dev,
        category: WasteCategory,
        weight_g: u32,
        missorted: bool,
    },
    Collect {
        bin: Dev,
    },
    /// Bags dumped beside the kiosk.
    Dump {
        bin: Dev,
        bags: u16,
    },
}

fn add_bin_state(mut commands: Commands, reg: Res<Registry>) {
    for (i, d) in reg.devices.iter().enumerate() {
        if d.kind == DeviceKind::SortingBin {
            commands.entity(reg.entity[i]).insert(BinState::default());
        }
    }
}

/// A household that sorts carefully: persuaded by a response (until its relapse, `epoch` telling the
/// relapse which persuasion it ends) or won over by points (`for_good`).
#[derive(Component, Debug, Clone, Copy)]
pub struct Careful {
    pub for_good: bool,
    pub epoch: u32,
}

/// A persuaded household going back to its old sorting.
#[derive(Debug, Clone, Copy)]
pub struct Relapse {
    flat: Entity,
    epoch: u32,
}

/// A household the response to a wrong-sorts order persuaded sorts carefully from now on, until the drawn
/// relapse, if any. Answers name the flat by estate and label.
#[allow(clippy::too_many_arguments)]
fn persuade(
    mut commands: Commands,
    answers: Res<Answers>,
    clock: Res<Clock>,
    reg: Res<Registry>,
    households: Query<(Entity, &Household, Option<&Careful>)>,
    mut relapses: ResMut<Agenda<Relapse>>,
    mut by_label: Local<Option<std::collections::HashMap<(String, String), Entity>>>,
    mut epochs: Local<u32>,
) {
    for (_, r) in relapses.due(clock.now) {
        if let Ok((_, _, Some(c))) = households.get(r.flat)
            && !c.for_good
            && c.epoch == r.epoch
        {
            commands.entity(r.flat).remove::<Careful>();
        }
    }
    for a in answers.0.iter().filter(|a| a.kind == IncidentKind::GarbageMissort) {
        let index = by_label.get_or_insert_with(|| households.iter().map(|(e, h, _)| (h.place(&reg), e)).collect());
        let Some(&flat) = index.get(&(a.area.clone(), a.subject.clone())) else { continue };
        let Ok((_, _, careful)) = households.get(flat) else { continue };
        if careful.is_some_and(|c| c.for_good) {
            continue;
        }
        *epochs += 1;
        commands.entity(flat).insert(Careful { for_good: false, epoch: *epochs });
        if let Some(at) = a.resume_at {
            relapses.push(at, Relapse { flat, epoch: *epochs });
        }
    }
}

/// Points for sorting right (the platform's `points_sorting_per_week`): at the start of each week of the
/// run, each household of a covered estate not yet careful for good becomes so with that chance, drawn from
/// a stream keyed by the household and the week (the same household in every variant that has points).
fn points(mut commands: Commands, clock: Res<Clock>, params: Res<Params>, reg: Res<Registry>, households: Query<(Entity, &Household, Option<&Careful>)>) {
    let platform = &params.scenario.platform;
    let p = platform.points_sorting_per_week.get();
    if p <= 0.0 || !clock.day.is_multiple_of(7) || clock.day == 0 {
        return;
    }
    let week = clock.day / 7;
    for (flat, h, careful) in &households {
        if h.bin.is_some()
            && careful.is_none_or(|c| !c.for_good)
            && platform.covers(&reg.estate_ids[h.estate as usize])
            && params.rng("garbage.points", crate::world::flat_key(h.estate, h.flat), week).random_bool(p)
        {
            commands.entity(flat).insert(Careful { for_good: true, epoch: 0 });
        }
    }
}

fn plan_day(
    clock: Res<Clock>,
    params: Res<Params>,
    reg: Res<Registry>,
    households: Query<(Entity, &Household, Has<Careful>)>,
    mut agenda: ResMut<Agenda<BinAction>>,
) {
    let cfg = &params.scenario.garbage;
    let begin = clock.day_begin();
    let mut rngs: Vec<_> = (0..reg.estate_ids.len()).map(|e| params.rng("garbage.drops", e as u64, clock.day)).collect();
    for (flat, h, careful) in in_order(households, |x| x.1.key()) {
        let Some(bin) = h.bin else { continue };
        let rng = &mut rngs[h.estate as usize];
        let mut missort = match h.tenure {
            Tenure::Owner | Tenure::Vacant => cfg.missort_owner.get(),
            Tenure::RegisteredTenant => cfg.missort_tenant.get(),
            Tenure::UnregisteredOccupant => cfg.missort_unregistered.get(),
        };
        if careful {
            missort *= cfg.careful_missort_factor.get();
        }
        // Bigger households drop a little more often.
        let mean = cfg.drops_per_household_day * (0.8 + 0.1 * h.size.min(6) as f64);
        for _ in 0..poisson(rng, mean) {
            let t = if rng.random_bool(cfg.morning_share.get()) { at_hours(rng, begin, 6.5, 9.0) } else { at_hours(rng, begin, 18.0, 21.0) };
            let category =
                [WasteCategory::Residual, WasteCategory::Kitchen, WasteCategory::Recyclable, WasteCategory::Hazardous][pick(rng, &[0.45, 0.40, 0.13, 0.02])];
            let weight_g = rng.random_range(200..2_500);
            agenda.push(t, BinAction::Drop { flat, bin, category, weight_g, missorted: rng.random_bool(missort) });
        }
    }
    // Dumping outside the fixed times: during the day between the windows, or late at night.
    if cfg.dumping_per_kiosk_day > 0.0 {
        let mut rng = params.rng("garbage.dumping", 0, clock.day);
        for (i, d) in reg.devices.iter().enumerate() {
            if d.kind != DeviceKind::SortingBin {
                continue;
            }
            for _ in 0..poisson(&mut rng, cfg.dumping_per_kiosk_day) {
                let t = if rng.random_bool(0.7) { at_hours(&mut rng, begin, 9.0, 18.0) } else { at_hours(&mut rng, begin, 21.0, 24.0) };
                agenda.push(t, BinAction::Dump { bin: i as Dev, bags: rng.random_range(1..=4) });
            }
        }
    }
    let mut rng = params.rng("garbage.collect", 0, clock.day);
    for (i, d) in reg.devices.iter().enumerate() {
        if d.kind != DeviceKind::SortingBin {
            continue;
        }
        for at in &cfg.collections {
            if !rng.random_bool(cfg.collection_miss_prob.get()) {
                agenda.push(begin + at.millis() + rng.random_range(0..900) * 1_000, BinAction::Collect { bin: i as Dev });
            }
        }
    }
}

fn act(ctx: Ctx, mut agenda: ResMut<Agenda<BinAction>>, households: Query<&Household>, mut bins: Query<(&Health, &mut BinState)>, mut rec: Record) {
    let Ctx { clock, params, reg } = &ctx;
    let Record { truth, outbox } = &mut rec;
    let cfg = &params.scenario.garbage;
    let cap = cfg.bin_capacity_drops.max(1);
    let mut rng = params.rng("garbage.act", 0, clock.tick as u32);
    for (t, a) in agenda.due(clock.now) {
        match a {
            BinAction::Drop { flat, bin, category, weight_g, missorted } => {
                let Ok(h) = households.get(flat) else { continue };
                let Ok((health, mut state)) = bins.get_mut(reg.entity[bin as usize]) else { continue };
                let area = &reg.devices[bin as usize].area;
                state.drops += 1;
                let fill_pct = (state.drops * 100 / cap) as u16;
                if missorted {
                    truth.instant(IncidentKind::GarbageMissort, area, h.label(), t, false);
                }
                let flagged = if missorted { rng.random_bool(cfg.missort_recall.get()) } else { rng.random_bool(cfg.missort_false_flag.get()) };
                if health.reports() {
                    // A stuck kiosk's level sensor keeps saying it is empty.
                    let shown = if health.stuck { 0 } else { fill_pct };
                    let data = BinDrop { flat: h.flat, category, weight_g, sorted_ok: !flagged, fill_pct: shown };
                    outbox.emit(t, bin, EventType::BinDrop, Some(h.flat), Data::BinDrop(data));
                }
                if state.drops == cap + 1 {
                    state.overflow = Some(truth.open(IncidentKind::BinOverflow, area, reg.devices[bin as usize].id.to_string(), t, false));
                    if health.senses() {
                        outbox.emit(t, bin, EventType::BinOverflow, None, Data::BinLevel(BinLevel { fill_pct }));
                    }
                }
            }
            BinAction::Dump { bin, bags } => {
                let Ok((health, mut state)) = bins.get_mut(reg.entity[bin as usize]) else { continue };
                let d = &reg.devices[bin as usize];
                // A new incident unless bags are still there (a response or a collection ends it).
                if state.dumping.is_none_or(|i| truth.incidents[i].end_ms.is_some()) {
                    state.dumping = Some(truth.open(IncidentKind::GarbageDumping, &d.area, d.id.to_string(), t, false));
                }
                if health.senses() && params.rng("garbage.dumping_seen", bin as u64, clock.tick as u32).random_bool(cfg.dumping_seen.get()) {
                    outbox.emit(t, bin, EventType::BinDumping, None, Data::Dumping(Dumping { bags }));
                }
            }
            BinAction::Collect { bin } => {
                let Ok((health, mut state)) = bins.get_mut(reg.entity[bin as usize]) else { continue };
                let fill_pct = (state.drops * 100 / cap) as u16;
                state.drops = 0;
                if let Some(i) = state.overflow.take() {
                    truth.close(i, t);
                }
                // The collectors take the bags dumped beside it too.
                if let Some(i) = state.dumping.take()
                    && truth.incidents[i].end_ms.is_none()
                {
                    truth.close(i, t);
                }
                if health.reports() {
                    outbox.emit(t, bin, EventType::BinCollected, None, Data::BinLevel(BinLevel { fill_pct }));
                }
            }
        }
    }
}

/// An overflowing kiosk a response reached is emptied now (a collection out of schedule).
fn answer(answers: Res<Answers>, clock: Res<Clock>, reg: Res<Registry>, mut agenda: ResMut<Agenda<BinAction>>) {
    for a in answers.0.iter().filter(|a| a.kind == IncidentKind::BinOverflow && a.incident.is_some()) {
        if let Some(&bin) = reg.by_id.get(&a.subject) {
            agenda.push(clock.now, BinAction::Collect { bin });
        }
    }
}
