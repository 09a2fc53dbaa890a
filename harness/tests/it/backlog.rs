//! The core as deployed (`towntwin core`, its own process) on a real mosquitto, off the happy path: a
//! backlog of hundreds of thousands of messages queued for it while it was down, and a broker restart in
//! the middle of a burst. Each must drain to the end by itself: the core's watermark reaches the stream's
//! last clock tick, and every event is logged exactly once.
//!
//! Before the fix, the first stalled at 0% CPU with data unread in its socket: the connection's poll task
//! waited for room in the batch channel, the batch loop waited for room in the client's request channel to
//! acknowledge, and only the poll task could make that room (rumqttc takes one request per turn of its
//! loop while it reads up to nine packets).

use std::time::{Duration, Instant};

use crate::common::{logged, start_core, stream, tick_before};
use towntwin_harness::mosquitto::Mosquitto;
use towntwin_harness::mqtt::{Mode, Publisher};
use towntwin_harness::responders::OrdersWatch;
use towntwin_sim::generate::{small, to_ron};

/// Publishes `msgs` at QoS 1 (so the broker queues them for the core's session) and waits for every PUBACK.
async fn publish_all(ep: &towntwin_harness::broker::Endpoint, town: &towntwin_core::town::Town, msgs: &[towntwin_sim::Message]) {
    let mut p = Publisher::connect(ep, Mode::One, town, Duration::from_secs(30)).await.unwrap();
    for m in msgs {
        let mut m = m.clone();
        m.qos = 1;
        p.publish(m).await.unwrap();
    }
    assert_eq!(p.flush(Duration::from_secs(120)).await, 0, "the broker acknowledged every message");
    p.close().await;
}

#[test]
fn a_backlog_of_hundreds_of_thousands_queued_in_mosquitto_drains_after_a_restart() {
    if !Mosquitto::available_for_test() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), "").unwrap();
    let ep = broker.endpoint();
    let town = small(8, 12, 2);
    std::fs::write(dir.path().join("town.ron"), to_ron(&town)).unwrap();
    let (msgs, ticks) = stream(&town, 2);
    let n = msgs.len();
    assert!(n >= 200_000, "a backlog of hundreds of thousands: {n}");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut watch = rt.block_on(OrdersWatch::start(&ep)).unwrap();

    // The core makes its persistent session, then goes down; the whole stream queues for it.
    drop(start_core(ep.port, dir.path(), "backlog-test"));
    rt.block_on(publish_all(&ep, &town, &msgs));
    let t0 = Instant::now();
    let core = start_core(ep.port, dir.path(), "backlog-test");
    let drained = rt.block_on(watch.until(tick_before(&ticks, n - 1), Duration::from_secs(300)));
    let secs = t0.elapsed().as_secs_f64();
    drop(core);
    rt.block_on(watch.close());
    if let Err(e) = drained {
        panic!("the core did not drain a backlog of {n} ({} logged after {secs:.0} s): {e}", logged(dir.path()));
    }
    assert_eq!(logged(dir.path()), n as i64, "every queued event logged exactly once");
    eprintln!("backlog of {n} drained in {secs:.1} s ({:.0} events/s)", n as f64 / secs);
}

#[test]
fn a_broker_restart_mid_burst_is_ridden_out() {
    if !Mosquitto::available_for_test() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Persistence on, so a graceful restart keeps the core's session and what was queued for it.
    let db = dir.path().join("mosquitto.db");
    let mut broker = Mosquitto::start(dir.path(), &format!("persistence true\npersistence_location {}/\n", dir.path().display())).unwrap();
    let ep = broker.endpoint();
    let town = small(9, 6, 1);
    std::fs::write(dir.path().join("town.ron"), to_ron(&town)).unwrap();
    let (msgs, ticks) = stream(&town, 2);
    let n = msgs.len();
    let half = n / 2;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let core = start_core(ep.port, dir.path(), "restart-test");
    rt.block_on(publish_all(&ep, &town, &msgs[..half]));
    // Restart the broker while the core is still working through the first half.
    let mid = logged(dir.path());
    broker.restart_graceful().unwrap();
    assert!(db.exists(), "mosquitto saved its sessions");
    let mut watch = rt.block_on(OrdersWatch::start(&ep)).unwrap();
    // The second half, after the restart: queued for the core's session, which the broker kept.
    rt.block_on(publish_all(&ep, &town, &msgs[half..]));
    // Redelivered or fresh, the last tick's watermark comes once the core has everything before it.
    let drained = rt.block_on(watch.until(tick_before(&ticks, n - 1), Duration::from_secs(300)));
    drop(core);
    rt.block_on(watch.close());
    if let Err(e) = drained {
        panic!("the core did not ride out the broker restart ({} of {n} logged; {mid} when it restarted): {e}", logged(dir.path()));
    }
    assert_eq!(logged(dir.path()), n as i64, "every event logged exactly once across the restart");
}

/// The twin's own side of a broker restart: its connection has a clean session, so the restarted broker
/// says it kept none, and rumqttc then drops what it had not had acknowledged (the in-flight window and
/// everything queued in its channel). Before the fix thousands of messages vanished this way and the run
/// still exited 0; now they are sent again, and the core (whose session the broker kept) logs every event
/// exactly once.
#[test]
fn the_publisher_sends_again_what_a_broker_restart_left_unacknowledged() {
    use towntwin_harness::mqtt::Counters;
    if !Mosquitto::available_for_test() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path(), &format!("persistence true\npersistence_location {}/\n", dir.path().display())).unwrap();
    let ep = broker.endpoint();
    let town = small(10, 6, 1);
    std::fs::write(dir.path().join("town.ron"), to_ron(&town)).unwrap();
    let (msgs, ticks) = stream(&town, 2);
    let n = msgs.len();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // All but the last tick and what follows it go out around the restart; the rest after it, once a watch
    // (which a restart would cut) is listening for the last tick's watermark.
    let (last, _) = *ticks.last().unwrap();
    let tail = msgs[last..].to_vec();
    let core = start_core(ep.port, dir.path(), "resend-test");
    let mut p = rt.block_on(Publisher::connect(&ep, Mode::One, &town, Duration::from_secs(30))).unwrap();
    let counters = p.counters.clone();
    let publishing = rt.spawn(async move {
        for m in msgs.into_iter().take(last) {
            let mut m = m;
            m.qos = 1;
            p.publish(m).await.unwrap();
        }
        let unacknowledged = p.flush(Duration::from_secs(120)).await;
        let published = p.published;
        p.close().await;
        (published, unacknowledged)
    });
    // Restart the broker in the middle of the burst.
    let half = rt.block_on(counters.wait_until(Instant::now() + Duration::from_secs(120), |c| c.pubacks() >= n as u64 / 3));
    assert!(half, "a third of the stream was acknowledged before the restart");
    broker.restart_graceful().unwrap();
    let (published, unacknowledged) = rt.block_on(publishing).unwrap();
    let resent = Counters::get(&counters.resent);
    let mut watch = rt.block_on(OrdersWatch::start(&ep)).unwrap();
    rt.block_on(publish_all(&ep, &town, &tail));
    let drained = rt.block_on(watch.until(tick_before(&ticks, n - 1), Duration::from_secs(300)));
    drop(core);
    rt.block_on(watch.close());
    assert_eq!(published, last as u64);
    assert_eq!(unacknowledged, 0, "every publish was acknowledged in the end");
    assert!(resent > 0, "the restart left something unacknowledged that was sent again");
    if let Err(e) = drained {
        panic!("the core did not get the whole stream ({} of {n} logged; {resent} sent again): {e}", logged(dir.path()));
    }
    assert_eq!(logged(dir.path()), n as i64, "every event logged exactly once: none lost, the resent ones dropped as duplicates");
    eprintln!("broker restart mid-burst: {resent} requests sent again, {n} events logged once each");
}

/// Publishes payloads of `sizes` on a device topic to a mosquitto with `extra` config, then a day of a
/// small town's stream; checks the core logged every event of the stream once, and returns the `oversized`
/// rejections in the store.
fn oversized_then_a_stream(extra: &str, id: &str, sizes: &[usize]) -> u64 {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path(), extra).unwrap();
    let ep = broker.endpoint();
    let town = small(8, 2, 1);
    std::fs::write(dir.path().join("town.ron"), to_ron(&town)).unwrap();
    let (msgs, ticks) = stream(&town, 1);
    let n = msgs.len();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut watch = rt.block_on(OrdersWatch::start(&ep)).unwrap();
    let core = start_core(ep.port, dir.path(), &format!("{id}-test"));
    rt.block_on(async {
        let mut o = MqttOptions::new(format!("{id}-publisher"), ep.host.clone(), ep.port);
        o.set_max_packet_size(4 << 20, 4 << 20).set_inflight(100);
        let (client, mut el) = AsyncClient::new(o, 100);
        let pump = tokio::spawn(async move { while el.poll().await.is_ok() {} });
        for &size in sizes {
            client.publish("town/E001/gate/E001-gate-01/gate.pass", QoS::AtLeastOnce, false, vec![b' '; size]).await.unwrap();
        }
        let _ = client.disconnect().await;
        let _ = pump.await;
    });
    rt.block_on(publish_all(&ep, &town, &msgs));
    let drained = rt.block_on(watch.until(tick_before(&ticks, n - 1), Duration::from_secs(120)));
    drop(core);
    rt.block_on(watch.close());
    if let Err(e) = drained {
        panic!("the core did not take the stream after the oversized messages ({} of {n} logged): {e}", logged(dir.path()));
    }
    assert_eq!(logged(dir.path()), n as i64, "every event after them logged once");
    towntwin_core::store::Reader::open(dir.path().join("core.db")).unwrap().rejected("oversized").unwrap()
}

#[test]
fn oversized_messages_through_mosquitto_are_refused_once_and_ingest_goes_on() {
    use towntwin_core::limits::BROKER_MAX_PAYLOAD;
    if !Mosquitto::available_for_test() {
        return;
    }
    // At the limit: delivered in an MQTT packet larger than 1 MiB, which the core's client must read (a
    // client limit of 1 MiB refused it, dropped the connection and was sent it again, forever). Then one
    // over mosquitto's message_size_limit: the broker refuses it (and may drop this publisher).
    let oversized = oversized_then_a_stream("", "oversize", &[BROKER_MAX_PAYLOAD, 2 * BROKER_MAX_PAYLOAD]);
    assert_eq!(oversized, 1, "the message at the limit was rejected once, not redelivered");
}

/// A mosquitto with its default `message_size_limit` (none) delivers whatever a publisher sends: a
/// 2,000,000-byte publish on a device topic made the core's connection fail on every reconnect, and the
/// town stopped for good. Now the core skips it unread, dead-letters a stub and takes what comes after.
#[test]
fn a_message_over_the_clients_limit_from_a_broker_with_no_limit_is_skipped_and_ingest_goes_on() {
    if !Mosquitto::available_for_test() {
        return;
    }
    // The last `message_size_limit` given wins: 0, mosquitto's default, is no limit.
    let oversized = oversized_then_a_stream("message_size_limit 0", "no-limit", &[2_000_000]);
    assert_eq!(oversized, 1, "rejected once, not sent again");
}

#[test]
fn the_observer_subscribes_again_after_the_broker_restarts() {
    use towntwin_harness::mqtt::{Counters, Observer};
    if !Mosquitto::available_for_test() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path(), "").unwrap();
    let ep = broker.endpoint();
    let town = small(8, 1, 1);
    let (msgs, _) = stream(&town, 1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let observer = rt.block_on(Observer::start(&ep, "town/#", false)).unwrap();
    // Abruptly: the broker forgets every session and subscription.
    broker.restart().unwrap();
    rt.block_on(async {
        let back = observer
            .counters
            .wait_until(std::time::Instant::now() + Duration::from_secs(30), |c| Counters::get(&c.connected) >= 2 && Counters::get(&c.subscribed) >= 2)
            .await;
        assert!(
            back,
            "the observer reconnected and subscribed again (connected {}, subscribed {})",
            Counters::get(&observer.counters.connected),
            Counters::get(&observer.counters.subscribed)
        );
        let part = &msgs[..1_000];
        publish_all(&ep, &town, part).await;
        let got = observer.wait_for(part.len() as u64, Duration::from_secs(3), Duration::from_secs(30)).await;
        assert_eq!(got, part.len() as u64, "everything published after the restart was observed");
    });
    rt.block_on(observer.close());
}
