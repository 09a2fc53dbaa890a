//! The embedded broker (patched rumqttd) under what clients do wrong: a subscriber that stops reading while
//! a flood is written to it, is taken over by a new connection with its client id (which then leaves), and
//! reads again. Its connection's task, unblocked, tells the router it is ready for more; the router has
//! dropped that connection by then. It used to unwrap the missing connection and panic, and every client
//! after it waited forever (seen once in CI as the district test's cores reconnected). The router must
//! ignore the late word and keep routing for everyone else.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::common::publisher;

fn options(ep: &towntwin_harness::broker::Endpoint, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, ep.host.clone(), ep.port);
    o.set_max_packet_size(1 << 20, 1 << 20).set_keep_alive(Duration::from_secs(60));
    o
}

/// Polls `el` until `what` is seen, at most 10 s.
async fn until(el: &mut EventLoop, what: fn(&Packet) -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(p) = el.poll().await.expect("connection failed")
                && what(&p)
            {
                return;
            }
        }
    })
    .await
    .expect("the broker did not answer within 10 s");
}

#[test]
fn the_broker_keeps_routing_when_a_stalled_subscriber_is_taken_over_and_reads_again() {
    let ep = towntwin_harness::broker::start_embedded().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        // A subscribes, then stops reading (its event loop is not polled).
        let (stalled, mut stalled_el) = AsyncClient::new(options(&ep, "taken-over"), 10);
        stalled.subscribe("flood/#", QoS::AtMostOnce).await.unwrap();
        until(&mut stalled_el, |p| matches!(p, Packet::SubAck(_))).await;

        // A flood far beyond the socket buffers: the broker's link to A blocks writing, and the router
        // fills A's outgoing buffer and marks it unscheduled.
        let (flood, flood_loop) = publisher(&ep, "flood").await;
        let payload = vec![b'x'; 1024];
        for i in 0..40_000u32 {
            flood.publish(format!("flood/{}", i % 16), QoS::AtMostOnce, false, payload.clone()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        // B takes A's client id (the router drops A's connection) and leaves (the slot is free again).
        let (taker, mut taker_el) = AsyncClient::new(options(&ep, "taken-over"), 10);
        until(&mut taker_el, |p| matches!(p, Packet::ConnAck(_))).await;
        taker.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), async { while taker_el.poll().await.is_ok() {} }).await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        // A reads again: the broker's link to it finishes its write and tells the router it is ready.
        let mut read = 0u64;
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while let Ok(e) = stalled_el.poll().await {
                if let Event::Incoming(Packet::Publish(_)) = e {
                    read += 1;
                }
            }
        })
        .await;
        assert!(read > 0, "the stalled subscriber read nothing of the flood: the test did not stall it");

        // The router still routes: a fresh subscriber gets what is published after it subscribed.
        let (probe, mut probe_el) = AsyncClient::new(options(&ep, "probe"), 10);
        probe.subscribe("probe/#", QoS::AtLeastOnce).await.unwrap();
        until(&mut probe_el, |p| matches!(p, Packet::SubAck(_))).await;
        flood.publish("probe/1", QoS::AtLeastOnce, false, b"hello".to_vec()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), until(&mut probe_el, |p| matches!(p, Packet::Publish(_))))
            .await
            .expect("a subscriber that came after got nothing: the broker stopped routing");
        flood_loop.abort();
    });
}
