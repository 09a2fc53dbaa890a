//! The core process is killed (SIGKILL) in the middle of a stream and restarted: every committed work order
//! and timer is still there, nothing is duplicated, and the stream completes with the same work orders as an
//! uninterrupted in-process run over the same messages.

use std::time::Duration;

use crate::common::{logged, reference, start_core, stored_orders, stream, tick_before};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use towntwin_harness::responders::OrdersWatch;
use towntwin_sim::generate::{small, to_ron};

#[test]
fn sigkill_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let town = small(6, 2, 1);
    std::fs::write(dir.path().join("town.ron"), to_ron(&town)).unwrap();
    let (msgs, ticks) = stream(&town, 2);

    let ep = towntwin_harness::broker::start_embedded().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (client, task) = rt.block_on(async {
        let mut o = MqttOptions::new("kill-test-publisher", ep.host.clone(), ep.port);
        o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(100);
        let (client, mut el) = AsyncClient::new(o, 10_000);
        let task = tokio::spawn(async move { while el.poll().await.is_ok() {} });
        (client, task)
    });
    let publish = |range: &[towntwin_sim::Message]| {
        rt.block_on(async {
            for m in range {
                // All QoS 1: the broker keeps them for the core's session while it is down.
                client.publish_bytes(m.topic().to_string(), QoS::AtLeastOnce, false, m.payload.clone()).await.unwrap();
            }
        })
    };
    let n = msgs.len();
    let (a, b) = (n * 2 / 5, n * 3 / 5);
    assert_eq!(ticks.last().map(|t| t.0), Some(n - 1), "the stream ends with a clock tick");
    // The core's notices and watermarks, on a subscription of our own that outlives the core's restarts.
    let mut watch = rt.block_on(OrdersWatch::start(&ep)).unwrap();

    let core = start_core(ep.port, dir.path(), "kill-test");
    publish(&msgs[..a]);
    // Kill it while it is still working through the stream: once its watermark passes a tenth of it.
    rt.block_on(watch.until(tick_before(&ticks, a / 4), Duration::from_secs(60))).expect("the core takes the stream");
    drop(core); // SIGKILL
    let at_kill = logged(dir.path());
    publish(&msgs[a..b]); // while the core is down
    let core = start_core(ep.port, dir.path(), "kill-test");
    publish(&msgs[b..]);
    // The last message is a clock tick: its watermark means every event before it is committed.
    if let Err(e) = rt.block_on(watch.until(tick_before(&ticks, n - 1), Duration::from_secs(240))) {
        panic!("the core did not finish the stream after the restart ({} of {n} logged): {e}", logged(dir.path()));
    }
    drop(core);
    rt.block_on(watch.close());
    task.abort();
    assert!(at_kill > 0 && at_kill < n as i64, "killed mid-stream ({at_kill} of {n})");

    // The reference: the same messages in the same order, in-process, no kill.
    assert_eq!(logged(dir.path()), n as i64, "every event logged exactly once");
    let got = stored_orders(dir.path());
    let want = reference(&town, &msgs);
    assert!(want.len() > 20, "the stream makes orders: {}", want.len());
    assert_eq!(got.len(), want.len(), "no order lost or duplicated");
    assert_eq!(got, want);
}
