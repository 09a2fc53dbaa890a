//! Exactly-once accounting: every event sent against what the core's event log holds, and every work order
//! a reference core made from the same traffic against what the core under load made, with the ids of what
//! went wrong. Pure functions over lists, so that they can be tested with a known loss and a known duplicate.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

/// One sent event: its key in the core's event log (`source id`) and its QoS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub key: String,
    pub qos: u8,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Events {
    pub sent: u64,
    pub sent_qos1: u64,
    pub sent_qos0: u64,
    /// Events the reference core accepted (the rest it refused as the core under load should).
    pub expected: u64,
    /// Distinct sent events in the core's event log.
    pub accepted: u64,
    /// QoS 1 events the reference core accepted that the core under load never logged.
    pub lost_qos1: u64,
    /// The same at QoS 0: a sensor reading a broker may drop while the core is away.
    pub lost_qos0: u64,
    /// Events in the log more than once (the dedup failed).
    pub duplicated: u64,
    /// Events in the log that were never sent.
    pub unknown: u64,
    /// Up to 50 of each, for the report (QoS 1 losses apart: they are the ones judged).
    pub lost_qos1_ids: Vec<String>,
    pub lost_qos0_ids: Vec<String>,
    pub duplicated_ids: Vec<String>,
}

/// `sent` in order; `expected`: the keys the reference core accepted; `logged`: the event log's keys.
pub fn events(sent: &[Sent], expected: &HashSet<String>, logged: &[String]) -> Events {
    let mut seen: HashMap<&str, u32> = HashMap::with_capacity(logged.len());
    for k in logged {
        *seen.entry(k.as_str()).or_default() += 1;
    }
    let mut e = Events { sent: sent.len() as u64, expected: expected.len() as u64, ..Default::default() };
    let mut sent_keys = HashSet::with_capacity(sent.len());
    for s in sent {
        if s.qos == 0 {
            e.sent_qos0 += 1;
        } else {
            e.sent_qos1 += 1;
        }
        if !sent_keys.insert(s.key.as_str()) {
            continue;
        }
        match seen.get(s.key.as_str()) {
            Some(&n) => {
                e.accepted += 1;
                if n > 1 {
                    e.duplicated += u64::from(n - 1);
                    if e.duplicated_ids.len() < 50 {
                        e.duplicated_ids.push(s.key.clone());
                    }
                }
            }
            None if expected.contains(&s.key) => {
                let (n, ids) = if s.qos == 0 { (&mut e.lost_qos0, &mut e.lost_qos0_ids) } else { (&mut e.lost_qos1, &mut e.lost_qos1_ids) };
                *n += 1;
                if ids.len() < 50 {
                    ids.push(s.key.clone());
                }
            }
            None => {}
        }
    }
    e.unknown = seen.keys().filter(|k| !sent_keys.contains(**k)).count() as u64;
    e
}

/// A work order as the accounting keys it: rule, the rule's key, and the event time it was created at
/// (which the core decides from event time alone, so the same traffic gives the same triples).
pub type OrderKey = (String, String, i64);

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Orders {
    pub expected: u64,
    pub made: u64,
    /// Expected and never made.
    pub lost: u64,
    /// Made more often than expected.
    pub duplicated: u64,
    /// Made and not expected (traffic the core under load did not see as the reference did: QoS 0 losses).
    pub unexpected: u64,
    /// Made, and its creation notice came later than the SLO's `late_ms` after the cause's intended send.
    pub late: u64,
    /// Made, and no creation notice ever came.
    pub unnotified: u64,
    pub lost_ids: Vec<String>,
    pub duplicated_ids: Vec<String>,
    pub late_ids: Vec<String>,
    pub unnotified_ids: Vec<u64>,
}

/// `made`: (order id, key); `latency_ms`: the creation notice's latency by order id.
pub fn orders(expected: &[OrderKey], made: &[(u64, OrderKey)], latency_ms: &HashMap<u64, f64>, late_ms: f64) -> Orders {
    let mut want: BTreeMap<&OrderKey, i64> = BTreeMap::new();
    for k in expected {
        *want.entry(k).or_default() += 1;
    }
    let mut o = Orders { expected: expected.len() as u64, made: made.len() as u64, ..Default::default() };
    let name = |k: &OrderKey| format!("{} {} @{}", k.0, k.1, k.2);
    let mut got: BTreeMap<&OrderKey, i64> = BTreeMap::new();
    for (id, k) in made {
        *got.entry(k).or_default() += 1;
        match latency_ms.get(id) {
            Some(&ms) if ms > late_ms => {
                o.late += 1;
                if o.late_ids.len() < 50 {
                    o.late_ids.push(format!("order {id} ({}) {ms:.0} ms", name(k)));
                }
            }
            Some(_) => {}
            None => {
                o.unnotified += 1;
                if o.unnotified_ids.len() < 50 {
                    o.unnotified_ids.push(*id);
                }
            }
        }
    }
    for (k, &n) in &want {
        let m = got.get(k).copied().unwrap_or(0);
        if m < n {
            o.lost += (n - m) as u64;
            if o.lost_ids.len() < 50 {
                o.lost_ids.push(name(k));
            }
        }
        if m > n {
            o.duplicated += (m - n) as u64;
            if o.duplicated_ids.len() < 50 {
                o.duplicated_ids.push(name(k));
            }
        }
    }
    o.unexpected = got.iter().filter(|(k, _)| !want.contains_key(*k)).map(|(_, &n)| n as u64).sum();
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(k: &str, qos: u8) -> Sent {
        Sent { key: k.into(), qos }
    }

    #[test]
    fn a_lost_and_a_duplicated_event_are_named() {
        let s = vec![sent("a 1", 1), sent("a 2", 1), sent("b 1", 0), sent("b 2", 0), sent("c 1", 1)];
        // c 1 was refused by the reference core too (an old timestamp, say): not lost.
        let expected: HashSet<String> = ["a 1", "a 2", "b 1", "b 2"].iter().map(|s| s.to_string()).collect();
        let logged: Vec<String> = ["a 1", "a 1", "b 2", "zz 9"].iter().map(|s| s.to_string()).collect();
        let e = events(&s, &expected, &logged);
        assert_eq!((e.sent, e.sent_qos1, e.sent_qos0, e.expected), (5, 3, 2, 4));
        assert_eq!(e.accepted, 2);
        assert_eq!((e.lost_qos1, e.lost_qos0), (1, 1));
        assert_eq!((e.lost_qos1_ids.clone(), e.lost_qos0_ids.clone()), (vec!["a 2".to_string()], vec!["b 1".to_string()]));
        assert_eq!((e.duplicated, e.duplicated_ids.clone()), (1, vec!["a 1".to_string()]));
        assert_eq!(e.unknown, 1);
        // Nothing wrong: nothing counted.
        let clean = events(&s[..2], &expected, &["a 1".into(), "a 2".into()]);
        assert_eq!((clean.lost_qos1, clean.lost_qos0, clean.duplicated, clean.unknown), (0, 0, 0, 0));
    }

    #[test]
    fn orders_lost_duplicated_late_and_unnotified() {
        let k = |r: &str, t: i64| (r.to_string(), "E001/x".to_string(), t);
        let expected = vec![k("smoke", 1), k("smoke", 2), k("fence", 3)];
        let made = vec![(1, k("smoke", 1)), (2, k("smoke", 1)), (3, k("fence", 3)), (4, k("absence", 9))];
        let lat: HashMap<u64, f64> = [(1, 20.0), (2, 30.0), (3, 5_000.0)].into_iter().collect();
        let o = orders(&expected, &made, &lat, 1_000.0);
        assert_eq!((o.expected, o.made), (3, 4));
        assert_eq!((o.lost, o.duplicated, o.unexpected), (1, 1, 1));
        assert_eq!(o.lost_ids, vec!["smoke E001/x @2".to_string()]);
        assert_eq!((o.late, o.unnotified, o.unnotified_ids.clone()), (1, 1, vec![4]));
    }
}
