//! The fault matrix, as tests: the core SIGKILLed at twenty random points while the twin's stream pours
//! in, its store filling up (a full disk), and a consumer of its notices that stops reading. For each:
//! nothing acknowledged is lost, nothing is stored twice, a clear error where the core must stop, and the
//! recovery time (printed; recorded in results/PERFORMANCE.md).

use std::time::{Duration, Instant};

use crate::common::{logged, reference, root, start_core, stored_orders, stream, tick_before};
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use towntwin_core::ingest::IngestConfig;
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::server::{self, CoreConfig};
use towntwin_harness::responders::OrdersWatch;
use towntwin_sim::generate::{small, to_ron};

fn inputs() -> (RuleSet, Policy) {
    (RuleSet::load(&root().join("assets/rules.ron")).unwrap(), Policy::load(&root().join("scenarios/policies/standard.ron")).unwrap())
}

/// A QoS 1 publisher on its own task: publishes `msgs` in order as fast as the broker takes them.
fn pour(rt: &tokio::runtime::Runtime, ep: &towntwin_harness::broker::Endpoint, id: &str, msgs: Vec<towntwin_sim::Message>) -> tokio::task::JoinHandle<()> {
    let mut o = MqttOptions::new(id, ep.host.clone(), ep.port);
    o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(100);
    rt.spawn(async move {
        let (client, mut el) = AsyncClient::new(o, 10_000);
        let pump = tokio::spawn(async move { while el.poll().await.is_ok() {} });
        for m in &msgs {
            client.publish_bytes(m.topic().to_string(), QoS::AtLeastOnce, false, m.payload.clone()).await.unwrap();
        }
        // Let the last publishes go out before the pump is dropped with the task.
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(30), pump).await;
    })
}

#[test]
fn twenty_sigkills_at_random_points_under_load_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let town = small(6, 3, 1);
    std::fs::write(dir.path().join("town.ron"), to_ron(&town)).unwrap();
    let (msgs, ticks) = stream(&town, 2);
    let n = msgs.len();
    let ep = towntwin_harness::broker::start_embedded().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut watch = rt.block_on(OrdersWatch::start(&ep)).unwrap();
    // Twenty kill points, drawn from a fixed seed over the stream (by the clock tick the core has reached).
    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    let mut points: Vec<usize> = (0..20).map(|_| rng.random_range(n / 50..n * 49 / 50)).collect();
    points.sort();

    let mut core = Some(start_core(ep.port, dir.path(), "twenty-kills"));
    let publisher = pour(&rt, &ep, "twenty-kills-publisher", msgs.clone());
    let mut restarts = Vec::new();
    for (k, p) in points.iter().enumerate() {
        if let Err(e) = rt.block_on(watch.until(tick_before(&ticks, *p), Duration::from_secs(120))) {
            panic!("kill {k}: the core did not reach message {p} ({} logged): {e}", logged(dir.path()));
        }
        drop(core.take()); // SIGKILL
        let t0 = Instant::now();
        core = Some(start_core(ep.port, dir.path(), "twenty-kills"));
        restarts.push(t0.elapsed().as_secs_f64());
    }
    let t0 = Instant::now();
    if let Err(e) = rt.block_on(watch.until(tick_before(&ticks, n - 1), Duration::from_secs(240))) {
        panic!("the core did not finish after 20 kills ({} of {n} logged): {e}", logged(dir.path()));
    }
    let tail = t0.elapsed().as_secs_f64();
    drop(core);
    rt.block_on(publisher).unwrap();
    rt.block_on(watch.close());

    assert_eq!(logged(dir.path()), n as i64, "every event logged exactly once across 20 kills");
    let want = reference(&town, &msgs);
    assert!(want.len() > 20, "the stream makes orders: {}", want.len());
    assert_eq!(stored_orders(dir.path()), want, "the same work orders as a run that was never killed");
    restarts.sort_by(f64::total_cmp);
    eprintln!(
        "20 SIGKILLs over {n} events: restart to subscribed p50 {:.2} s, max {:.2} s; last stretch {tail:.1} s",
        restarts[restarts.len() / 2],
        restarts[restarts.len() - 1]
    );
}

#[test]
fn a_full_disk_stops_the_core_with_a_clear_error_and_a_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("core.db");
    let town = small(6, 2, 1);
    let (msgs, _) = stream(&town, 1);
    let n = msgs.len() as u64;
    let ep = towntwin_harness::broker::start_embedded().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ingest = || IngestConfig { client_id: "disk-full-test".into(), ..IngestConfig::new(&ep.host, ep.port) };
    let (rules, policy) = inputs();
    let mut handle = rt.block_on(server::start(CoreConfig::new(town.clone(), rules, policy, Some(db.clone()), ingest()))).unwrap();
    // Room for a few thousand events, then the "disk" is full.
    handle.core().lock().unwrap().store().unwrap().limit_pages(400).unwrap();
    let publisher = pour(&rt, &ep, "disk-full-publisher", msgs.clone());
    let stopped = rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), handle.stopped()).await });
    let err = match stopped {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(())) => panic!("the core stopped without an error on a full disk"),
        Err(_) => panic!("the core went on with a full disk"),
    };
    assert!(err.contains("not acknowledged") && err.contains("full"), "a clear error: {err}");
    let _ = rt.block_on(handle.shutdown());
    let at_stop = { towntwin_core::store::Reader::open(&db).unwrap().event_count().unwrap() as i64 };
    assert!(at_stop > 0 && (at_stop as u64) < n, "it stopped part way: {at_stop} of {n}");
    rt.block_on(publisher).unwrap();

    // Room again: a restart takes the rest from the broker, the batch that failed included.
    let t0 = Instant::now();
    let (rules, policy) = inputs();
    let handle = rt.block_on(server::start(CoreConfig::new(town.clone(), rules, policy, Some(db.clone()), ingest()))).unwrap();
    let mut received = handle.received();
    let logged_now = || towntwin_core::store::Reader::open(&db).unwrap().event_count().unwrap() as i64;
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(120), received.wait_for(|&got| got as i64 + at_stop >= n as i64)).await })
        .expect("the restarted core takes the rest")
        .unwrap();
    let recovered = t0.elapsed().as_secs_f64();
    let core = rt.block_on(handle.shutdown()).unwrap();
    assert_eq!(logged_now(), n as i64, "every event exactly once: none lost to the full disk, none twice");
    assert_eq!(
        core.orders.orders.iter().map(|o| (o.rule.clone(), o.key.clone(), o.created_at)).collect::<Vec<_>>(),
        reference(&town, &msgs),
        "the same work orders as if the disk had never filled"
    );
    assert!(core.store().unwrap().verify_audit(None).is_ok(), "the audit chain survived the failed commit");
    eprintln!("full disk after {at_stop} of {n} events; restarted with room, caught up in {recovered:.2} s");
}

/// A raw MQTT 3.1.1 client that subscribes to `orders/#` at QoS 1 and then never reads its socket.
fn stuck_subscriber(port: u16) -> std::net::TcpStream {
    use std::io::Write as _;
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
    let mut s: std::net::TcpStream = s.into();
    let id = b"stuck-consumer";
    let mut connect = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, id.len() as u8];
    connect.extend_from_slice(id);
    s.write_all(&[0x10, connect.len() as u8]).unwrap();
    s.write_all(&connect).unwrap();
    let filter = b"orders/#";
    let mut sub = vec![0x00, 0x01, 0x00, filter.len() as u8];
    sub.extend_from_slice(filter);
    sub.push(0x01);
    s.write_all(&[0x82, sub.len() as u8]).unwrap();
    s.write_all(&sub).unwrap();
    s
}

#[test]
fn a_consumer_that_stops_reading_does_not_hold_the_core_up() {
    use towntwin_harness::mosquitto::Mosquitto;
    if !Mosquitto::available_for_test() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "").unwrap();
    let ep = broker.endpoint();
    let town = small(8, 3, 1);
    std::fs::write(dir.path().join("town.ron"), to_ron(&town)).unwrap();
    let (msgs, ticks) = stream(&town, 1);
    let n = msgs.len();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut stuck = stuck_subscriber(ep.port);
    let core = start_core(ep.port, dir.path(), "slow-consumer-test");
    let mut watch = rt.block_on(OrdersWatch::start(&ep)).unwrap();
    let t0 = Instant::now();
    rt.block_on(pour(&rt, &ep, "slow-consumer-publisher", msgs.clone())).unwrap();
    if let Err(e) = rt.block_on(watch.until(tick_before(&ticks, n - 1), Duration::from_secs(120))) {
        panic!("the core stalled behind a consumer that does not read ({} of {n} logged): {e}", logged(dir.path()));
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(core);
    rt.block_on(watch.close());
    assert_eq!(logged(dir.path()), n as i64);
    // It was subscribed and the broker had notices waiting for it: its CONNACK, its SUBACK, then publishes.
    use std::io::Read as _;
    stuck.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut head = [0u8; 10];
    stuck.read_exact(&mut head).unwrap();
    assert_eq!(&head[..4], &[0x20, 0x02, 0x00, 0x00], "CONNACK, accepted");
    assert_eq!(&head[4..9], &[0x90, 0x03, 0x00, 0x01, 0x01], "SUBACK, QoS 1 granted");
    assert_eq!(head[9] & 0xf0, 0x30, "then a PUBLISH of a notice");
    eprintln!("{n} events through the core in {secs:.1} s with a consumer of its notices that never reads");
}

/// A broker that accepts the connection and never acknowledges a publish: the publisher's flush reports
/// every QoS 1 message as unacknowledged (a run then exits 1 saying how many), instead of hiding them.
#[test]
fn publishes_a_broker_never_acknowledged_are_counted_not_hidden() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use towntwin_harness::mqtt::{Mode, Publisher};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let town = small(3, 1, 1);
    let (msgs, _) = stream(&town, 1);
    let unacknowledged = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1 << 16];
                    if !matches!(s.read(&mut buf).await, Ok(n) if n > 0) || s.write_all(&[0x20, 0x02, 0x00, 0x00]).await.is_err() {
                        return;
                    }
                    // Swallow everything, acknowledge nothing.
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        let ep = towntwin_harness::broker::reach(&format!("mqtt://127.0.0.1:{port}")).unwrap();
        let mut p = Publisher::connect(&ep, Mode::One, &town, Duration::from_secs(10)).await.unwrap();
        for m in msgs.iter().filter(|m| m.qos == 1).take(50) {
            p.publish(m.clone()).await.unwrap();
        }
        let left = p.flush(Duration::from_secs(1)).await;
        p.close().await;
        left
    });
    assert_eq!(unacknowledged, 50);
}
