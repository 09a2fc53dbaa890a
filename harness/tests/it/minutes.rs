//! A core that orders its input by minutes (`--order minutes`) makes the same orders whatever order a
//! broker delivers a twin's stream in, as long as no QoS 1 message is lost: here the stream is delivered as
//! a cluster delivers it (each stretch's QoS 0 telemetry ahead of its QoS 1 messages, and part of those
//! redelivered behind the rest), to a core with a SQLite store that is restarted midway and snapshots
//! often; against a core without a store fed in the twin's order.

use std::path::Path;

use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::service::{Core, Order};
use towntwin_core::store::Store;
use towntwin_sim::Message;
use towntwin_sim::generate::small;

use crate::common::{root, stream};

/// The stream as a cluster might deliver it: in stretches of `n`, QoS 0 first (its own path is faster), then
/// the stretch's QoS 1 messages with their first half behind their second (redelivered after `ack_wait`).
fn as_a_cluster_delivers(msgs: &[Message], n: usize) -> Vec<&Message> {
    let mut out = Vec::with_capacity(msgs.len());
    for stretch in msgs.chunks(n) {
        out.extend(stretch.iter().filter(|m| m.qos == 0));
        let qos1: Vec<&Message> = stretch.iter().filter(|m| m.qos > 0).collect();
        let (first, second) = qos1.split_at(qos1.len() / 2);
        out.extend(second);
        out.extend(first);
    }
    out
}

fn open(db: &Path, rules: &RuleSet, policy: &Policy, town: &towntwin_core::town::Town) -> Core {
    let store = Store::open(db).unwrap();
    let mut core = Core::with_store(rules.clone(), policy.clone(), town, Some(store), Order::Minutes).unwrap();
    core.snapshot_every = 5_000;
    core
}

#[test]
fn ordered_by_minutes_a_reordered_stream_and_a_restart_make_the_orders_of_the_twins_order() {
    let town = small(6, 2, 1);
    let (msgs, _) = stream(&town, 1);
    let rules = RuleSet::load(&root().join("assets/rules.ron")).unwrap();
    let policy = Policy::load(&root().join("scenarios/policies/standard.ron")).unwrap();

    let mut reference = Core::with_store(rules.clone(), policy.clone(), &town, None, Order::Minutes).unwrap();
    for chunk in msgs.chunks(341) {
        let topics: Vec<&str> = chunk.iter().map(|m| m.topic()).collect();
        let payloads: Vec<&[u8]> = chunk.iter().map(|m| &m.payload[..]).collect();
        let out = reference.ingest_on(&topics, &payloads).unwrap();
        assert!(out.rejected.is_empty(), "{:?}", out.rejected.first());
    }
    assert_eq!(reference.stats.holding, 0);
    let want: Vec<(String, String, i64)> = reference.orders.orders.iter().map(|o| (o.rule.clone(), o.key.clone(), o.created_at)).collect();
    assert!(want.len() > 50, "{} orders", want.len());

    let delivered = as_a_cluster_delivers(&msgs, 3_000);
    assert_eq!(delivered.len(), msgs.len());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("core.db");
    let mut core = open(&db, &rules, &policy, &town);
    let half = delivered.len() / 2;
    let mut restarted = false;
    for (c, chunk) in delivered.chunks(341).enumerate() {
        if c * 341 >= half && !restarted {
            restarted = true;
            assert!(core.stats.holding > 0, "minutes are held when the core stops");
            drop(core);
            core = open(&db, &rules, &policy, &town);
        }
        let topics: Vec<&str> = chunk.iter().map(|m| m.topic()).collect();
        let payloads: Vec<&[u8]> = chunk.iter().map(|m| &m.payload[..]).collect();
        let qos0: Vec<bool> = chunk.iter().map(|m| m.qos == 0).collect();
        let out = core.ingest_delivered(&topics, &payloads, &qos0).unwrap();
        assert!(out.rejected.is_empty(), "{:?}", out.rejected.first());
    }
    assert_eq!(core.stats.holding, 0, "every minute applied at the end");
    assert_eq!(core.stats.minutes_forced, 0);
    assert!(core.has_snapshot(), "snapshots were taken between held minutes");
    let got: Vec<(String, String, i64)> = core.orders.orders.iter().map(|o| (o.rule.clone(), o.key.clone(), o.created_at)).collect();
    assert_eq!(got, want, "the orders of the twin's order");
    let stored = towntwin_core::store::Reader::open(&db).unwrap();
    assert_eq!(stored.event_count().unwrap(), msgs.len() as u64, "every event logged once");

    // In arrival order the same delivery makes other orders (or refuses what came ahead of its clock):
    // what the minutes are for.
    let mut arrival = Core::with_store(rules, policy, &town, None, Order::Arrival).unwrap();
    let mut refused = 0;
    for chunk in delivered.chunks(341) {
        let topics: Vec<&str> = chunk.iter().map(|m| m.topic()).collect();
        let payloads: Vec<&[u8]> = chunk.iter().map(|m| &m.payload[..]).collect();
        refused += arrival.ingest_on(&topics, &payloads).unwrap().rejected.len();
    }
    let other: Vec<(String, String, i64)> = arrival.orders.orders.iter().map(|o| (o.rule.clone(), o.key.clone(), o.created_at)).collect();
    assert!(refused > 0 || other != want, "arrival order made the same orders of a reordered stream");
}
