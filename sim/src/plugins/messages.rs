//! The messages features pass each other, in one place: what a resolved work order did in the town
//! ([`Answers`], from the responders to the feature that owns the incident) and which crews stand down for
//! a drill's trainees ([`StandDown`], from the drill to the responders). A feature reads or writes these,
//! never another feature's own state.

use std::collections::HashSet;

use bevy::prelude::*;
use towntwin_contracts::principal::Principal;
use towntwin_contracts::time::Millis;
use towntwin_contracts::truth::IncidentKind;

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
    pub order: u64,
    pub at: Millis,
    /// For a habit: when the household goes back to it.
    pub resume_at: Option<Millis>,
}

/// The crews whose principals the drill's trainees play: the twin's own responders leave their orders to
/// the trainees (see [`crate::plugins::responders`]).
#[derive(Resource, Debug, Default, Clone)]
pub struct StandDown(pub HashSet<Principal>);
