//! The traffic and what must come of it: the twin's stream as an endless iterator for the schedule, and a
//! reference core in this process that takes the same traffic first, to know which events must be
//! accepted and which work orders must be made.

use anyhow::{Result, anyhow};
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::service::{Core, Order};
use towntwin_sim::{Message, Twin};

use super::account;

/// The twin's traffic as an endless stream (ten years at most), minute by minute.
pub(super) struct Traffic {
    pub twin: Twin,
    pub buf: std::vec::IntoIter<Message>,
}

impl Iterator for Traffic {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.buf.next() {
                return Some(m);
            }
            if self.twin.finished() {
                return None;
            }
            self.buf = self.twin.step().into_iter();
        }
    }
}

#[derive(serde::Deserialize)]
pub(super) struct Ids<'a> {
    #[serde(borrow)]
    pub id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub source: std::borrow::Cow<'a, str>,
}

/// What the reference core made of the traffic: which messages it accepted (by index) and the work orders
/// it made, as (rule, key, created at).
pub struct Reference {
    pub accepted: Vec<bool>,
    pub orders: Vec<account::OrderKey>,
}

/// The work orders an uninterrupted core in this process makes of `msgs`, with `rules` and `policy`: the
/// reference a core that was killed, restarted or fed over a broker must match.
pub fn reference(rules: &RuleSet, policy: &Policy, town: &towntwin_core::town::Town, msgs: &[Message]) -> Result<Reference> {
    reference_in(rules, policy, town, msgs, Order::Arrival)
}

/// [`reference`] for a core that applies events in `order`.
pub fn reference_in(rules: &RuleSet, policy: &Policy, town: &towntwin_core::town::Town, msgs: &[Message], order: Order) -> Result<Reference> {
    let mut core = Core::with_store(rules.clone(), policy.clone(), town, None, order).map_err(|e| anyhow!("the reference core: {e}"))?;
    let mut accepted = vec![true; msgs.len()];
    for (c, chunk) in msgs.chunks(34).enumerate() {
        let topics: Vec<&str> = chunk.iter().map(|m| m.topic()).collect();
        let payloads: Vec<&[u8]> = chunk.iter().map(|m| &m.payload[..]).collect();
        let o = core.ingest_on(&topics, &payloads).map_err(|e| anyhow!("the reference core: {e}"))?;
        for (i, _) in &o.rejected {
            accepted[c * 34 + i] = false;
        }
    }
    let orders = core.orders.orders.iter().map(|o| (o.rule.clone(), o.key.clone(), o.created_at)).collect();
    Ok(Reference { accepted, orders })
}
