//! The core's own downtime is not a device's silence. While the core is away, a broker keeps its QoS 1
//! messages for it and drops the QoS 0 ones (heartbeats); before the fix, the silence rule counted those
//! lost heartbeats as silent devices and opened thousands of spurious device-silent orders. Here the
//! broker's behaviour is replayed exactly on the core: the same stream, with the QoS 0 messages of a
//! six-hour outage left out.

use crate::common::{root, stream};
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::service::Core;
use towntwin_sim::generate::small;

fn open(town: &towntwin_core::town::Town, db: Option<&std::path::Path>) -> Core {
    let rules = RuleSet::load(&root().join("assets/rules.ron")).unwrap();
    let policy = Policy::load(&root().join("scenarios/policies/standard.ron")).unwrap();
    Core::open(rules, policy, town, db.map(towntwin_core::store::Location::from).as_ref()).unwrap()
}

/// Delivers `msgs` (with their indices) to `core` in batches as a broker would, each with its QoS; a batch
/// never spans message `split` (the outage's start), so `before` sees the moment the feed broke exactly,
/// whatever the stream's length up to it.
fn deliver(core: &mut Core, msgs: &[(usize, &towntwin_sim::Message)], split: usize, mut before: impl FnMut(&mut Core, usize)) {
    let at = msgs.partition_point(|(i, _)| *i < split);
    let (head, tail) = msgs.split_at(at);
    for chunk in head.chunks(34).chain(tail.chunks(34)) {
        before(core, chunk[0].0);
        let topics: Vec<&str> = chunk.iter().map(|(_, m)| m.topic()).collect();
        let payloads: Vec<&[u8]> = chunk.iter().map(|(_, m)| &m.payload[..]).collect();
        let qos0: Vec<bool> = chunk.iter().map(|(_, m)| m.qos == 0).collect();
        core.ingest_delivered(&topics, &payloads, &qos0).unwrap();
    }
}

/// `msgs` as a broker delivers them when the core is away from message `gap.0` to `gap.1`: QoS 0 dropped.
fn delivered(msgs: &[towntwin_sim::Message], gap: (usize, usize)) -> Vec<(usize, &towntwin_sim::Message)> {
    msgs.iter().enumerate().filter(|(i, m)| !(gap.0 <= *i && *i < gap.1 && m.qos == 0)).collect()
}

/// Feeds `msgs` in batches as a broker delivers them; from message `gap.0` to `gap.1` the core is away
/// (QoS 0 dropped), and with `mark` it is told its feed broke when it comes back. Returns device-silent
/// findings and the core.
fn feed(msgs: &[towntwin_sim::Message], town: &towntwin_core::town::Town, gap: (usize, usize), mark: bool, db: Option<&std::path::Path>) -> (u64, Core) {
    let mut core = open(town, db);
    let mut back = false;
    deliver(&mut core, &delivered(msgs, gap), gap.0, |core, first| {
        if mark && !back && first >= gap.0 {
            core.feed_broke().unwrap();
            back = true;
        }
    });
    (core.stats.findings_by_rule.get("device-silent").copied().unwrap_or(0), core)
}

/// Six hours away, from the first tick after 10:00 on day one: the indices of the first and last tick.
fn outage(ticks: &[(usize, i64)]) -> ((usize, i64), (usize, i64)) {
    let start = *ticks.iter().find(|t| t.1 >= ticks[0].1 + 10 * 3_600_000).unwrap();
    let end = *ticks.iter().find(|t| t.1 >= start.1 + 6 * 3_600_000).unwrap();
    (start, end)
}

#[test]
fn heartbeats_lost_while_the_core_was_away_open_no_device_silent_orders() {
    let town = small(12, 8, 1);
    let (msgs, ticks) = stream(&town, 2);
    let (start, end) = outage(&ticks);
    let gap = (start.0, end.0);
    let dropped = msgs[gap.0..gap.1].iter().filter(|m| m.qos == 0).count();
    assert!(dropped > 1_000, "the outage drops heartbeats: {dropped}");

    let (control, _) = feed(&msgs, &town, (0, 0), false, None);
    let (unmarked, _) = feed(&msgs, &town, gap, false, None);
    assert!(unmarked > control + 20, "without knowing it was away, the core blames the devices ({unmarked} vs {control}): the failure this guards");

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("core.db");
    let (marked, core) = feed(&msgs, &town, gap, true, Some(&db));
    assert_eq!(marked, control, "knowing it was away, the core finds what it finds with every heartbeat, no more");
    assert_eq!(core.engine.blind.len(), 1);
    let (from, until) = core.engine.blind[0];
    assert!(start.1 - 120_000 <= from && from <= start.1, "the span starts at the core's clock when it went away: {from} vs {}", start.1);
    assert!(until.is_some_and(|u| u >= end.1 - 60_000), "the span ends at the first live message after the outage: {until:?} vs {}", end.1);
    drop(core);
    // The span is in the store: a restarted core knows it too.
    let again = open(&town, Some(&db));
    assert_eq!(again.engine.blind, vec![(from, until)]);
    eprintln!("device-silent findings: {control} with every heartbeat, {unmarked} blind, {marked} knowing it was blind ({dropped} heartbeats dropped)");

    // If no live message ever comes back, the core stops excusing silences a day after its feed broke:
    // the orders are opened, and say that the core's own feed may be the cause.
    let (never, core) = feed(&msgs, &town, (gap.0, msgs.len()), true, None);
    let noted: Vec<&str> =
        core.orders.orders.iter().filter(|o| o.rule == "device-silent").map(|o| o.detail.as_str()).filter(|d| d.contains("may be its own")).collect();
    assert!(never > control && noted.len() as u64 >= never - control, "{never} findings, {} noted, {control} in the control", noted.len());
    let first = core.orders.orders.iter().filter(|o| o.rule == "device-silent" && o.detail.contains("may be its own")).map(|o| o.created_at).min().unwrap();
    assert!(first >= from + towntwin_core::rules::BLIND_OPEN_LIMIT, "not before the limit");
}

/// A restart in the middle of the outage: the engine is rebuilt by replaying the events logged since its
/// last snapshot, with the blind spans from the store, so silences are re-armed as they were live and the
/// same device-silent orders come out as with every heartbeat.
#[test]
fn a_restart_during_the_outage_replays_with_the_blind_span() {
    let town = small(12, 8, 1);
    let (msgs, ticks) = stream(&town, 2);
    let (start, end) = outage(&ticks);
    let gap = (start.0, end.0);
    let (_, control) = feed(&msgs, &town, (0, 0), false, None);
    let silent = |c: &Core| c.orders.orders.iter().filter(|o| o.rule == "device-silent").count();

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("core.db");
    // Up to the middle of the outage, then the process dies (dropped without anything more).
    let mid = (gap.0 + gap.1) / 2;
    let (_, first) = feed(&msgs[..mid], &town, gap, true, Some(&db));
    drop(first);
    // Restarted: it opens its store and, as ingest does on connecting, notes its feed broke (the span is
    // still open, so nothing new), then takes the rest of the stream as the broker delivers it.
    let mut core = open(&town, Some(&db));
    core.feed_broke().unwrap();
    let all = delivered(&msgs, gap);
    deliver(&mut core, &all[all.partition_point(|(i, _)| *i < mid)..], 0, |_, _| {});
    assert_eq!(core.engine.blind.len(), 1, "{:?}", core.engine.blind);
    assert_eq!(silent(&core), silent(&control), "the same device-silent orders as with every heartbeat");
}
