//! The one way to start the core (`towntwin_core::server::start`), as a caller meets it: it returns once it
//! is subscribed and its API is listening, so a stream published right after it returns is taken whole;
//! its notices stream and its HTTP API are live; shutdown hands back the core with everything committed.
//! A broker that never answers is an error within the configured time, not a hang.

mod common;

use std::time::Duration;

use common::{root, stream};

use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use towntwin_core::ingest::IngestConfig;
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::server::{self, CoreConfig, ServerError};
use towntwin_sim::generate::small;
use towntwin_sim::{Scenario, Twin, TwinOptions};

fn inputs() -> (RuleSet, Policy) {
    (RuleSet::load(&root().join("assets/rules.ron")).unwrap(), Policy::load(&root().join("scenarios/policies/standard.ron")).unwrap())
}

async fn get(addr: std::net::SocketAddr, path: &str, token: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[test]
fn start_is_ready_when_it_returns_and_shutdown_returns_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let town = small(6, 2, 1);
    let (msgs, _) = stream(&town, 1);
    let n = msgs.len() as u64;

    let ep = towntwin_harness::broker::start_embedded().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (rules, policy) = inputs();
        let mut cfg = CoreConfig::new(town, rules, policy, Some(dir.path().join("core.db")), IngestConfig::new(&ep.host, ep.port));
        cfg.http = Some(([127, 0, 0, 1], 0).into());
        let handle = server::start(cfg).await.unwrap();
        let addr = handle.http_addr().expect("the API's address");
        let mut notices = handle.orders();
        let mut received = handle.received();

        // Published at once: start returned after the broker's SUBACK, so nothing may be missed.
        let mut o = MqttOptions::new("server-test-publisher", ep.host.clone(), ep.port);
        o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(100);
        let (client, mut el) = AsyncClient::new(o, 10_000);
        let pump = tokio::spawn(async move { while el.poll().await.is_ok() {} });
        for m in &msgs {
            client.publish_bytes(m.topic().to_string(), QoS::AtLeastOnce, false, m.payload.clone()).await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(120), received.wait_for(|&got| got >= n)).await.expect("the core takes the whole stream").unwrap();

        // The API answers on the address the handle gives, to a token the core issued and to no other.
        let token = handle.core().lock().unwrap().issue_token(&"town".parse().unwrap()).unwrap();
        let listed = get(addr, "/orders", &token).await;
        assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
        let refused = get(addr, "/orders", "forged").await;
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

        let core = handle.shutdown().await.unwrap();
        assert_eq!(core.stats.accepted, n, "every event committed once");
        let mut created = 0;
        while let Ok(notice) = notices.try_recv() {
            created += u64::from(notice.event.action == "create");
        }
        assert!(core.orders.orders.len() > 10, "a day makes orders: {}", core.orders.orders.len());
        assert_eq!(created, core.orders.orders.len() as u64, "the notices stream carried every order's creation");
        let _ = client.disconnect().await;
        pump.abort();
    });
}

#[test]
fn a_broker_that_never_acknowledges_is_an_error_in_bounded_time() {
    // A listener that accepts connections and never answers: no CONNACK, so no SUBACK.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (rules, policy) = inputs();
    let mut cfg = CoreConfig::new(small(1, 1, 1), rules, policy, None, IngestConfig::new("127.0.0.1", port));
    cfg.subscribe_timeout = Duration::from_secs(2);
    let t0 = std::time::Instant::now();
    let err = rt.block_on(server::start(cfg)).err().expect("start fails");
    assert!(matches!(err, ServerError::NotSubscribed { .. }), "{err}");
    assert!(err.to_string().contains("did not acknowledge"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(10), "bounded by the subscribe timeout: {:?}", t0.elapsed());
    drop(silent);
}

#[test]
fn an_oversized_message_is_dead_lettered_once_and_ingest_goes_on() {
    use towntwin_core::limits::{BROKER_MAX_PAYLOAD, CLIENT_MAX_PACKET};
    let dir = tempfile::tempdir().unwrap();
    let town = small(6, 1, 1);
    let mut scenario = Scenario::load(&root().join("scenarios/baseline.ron")).unwrap().scenario;
    scenario.days = 1;
    scenario.responders.enabled = false;
    let start = towntwin_core::time::parse_local_date(&scenario.start_date).unwrap();
    let mut twin = Twin::new(&scenario, start, town.clone(), TwinOptions::default());
    let mut msgs = Vec::new();
    while msgs.len() < 500 {
        msgs.extend(twin.step().into_iter().map(|m| (m.topic().to_string(), m.payload.clone())));
    }
    let n = msgs.len() as u64;

    let ep = towntwin_harness::broker::start_embedded().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (rules, policy) = inputs();
        let cfg = CoreConfig::new(town, rules, policy, Some(dir.path().join("core.db")), IngestConfig::new(&ep.host, ep.port));
        let handle = server::start(cfg).await.unwrap();
        let mut received = handle.received();
        // Someone listening to the dead letters.
        let mut o = MqttOptions::new("server-test-deadletters", ep.host.clone(), ep.port);
        o.set_max_packet_size(CLIENT_MAX_PACKET, CLIENT_MAX_PACKET);
        let (watcher, mut wel) = AsyncClient::new(o, 100);
        watcher.subscribe("deadletter/#", QoS::AtLeastOnce).await.unwrap();
        let (dl_tx, mut dl_rx) = tokio::sync::mpsc::unbounded_channel();
        let wpump = tokio::spawn(async move {
            while let Ok(ev) = wel.poll().await {
                match ev {
                    rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => {
                        let _ = dl_tx.send(None);
                    }
                    rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                        let _ = dl_tx.send(Some((p.topic.clone(), p.payload.len(), String::from_utf8_lossy(&p.payload).into_owned())));
                    }
                    _ => {}
                }
            }
        });
        assert_eq!(dl_rx.recv().await, Some(None), "subscribed to the dead letters");

        let mut o = MqttOptions::new("server-test-oversize", ep.host.clone(), ep.port);
        o.set_max_packet_size(CLIENT_MAX_PACKET, CLIENT_MAX_PACKET).set_inflight(100);
        let (client, mut el) = AsyncClient::new(o, 10_000);
        let pump = tokio::spawn(async move { while el.poll().await.is_ok() {} });
        // Nearly as large as rumqttd carries (its limit is on the whole packet): far over an event's limit.
        let big = vec![b' '; BROKER_MAX_PAYLOAD - 1024];
        client.publish("town/E001/gate/E001-gate-01/gate.pass", QoS::AtLeastOnce, false, big).await.unwrap();
        for (t, p) in &msgs {
            client.publish_bytes(t.clone(), QoS::AtLeastOnce, false, p.clone()).await.unwrap();
        }
        let taken = tokio::time::timeout(Duration::from_secs(60), received.wait_for(|&got| got > n)).await.is_ok();
        assert!(taken, "the core took the oversized message and the stream after it ({} of {} taken)", *received.borrow(), n + 1);
        let (topic, size, body) = tokio::time::timeout(Duration::from_secs(10), dl_rx.recv()).await.expect("a dead letter").unwrap().unwrap();
        assert_eq!(topic, "deadletter/oversized/town/E001/gate/E001-gate-01/gate.pass");
        assert!(size < 1_000 && body.contains("\"bytes\""), "a stub, not the message itself: {size} bytes, {body}");

        let core = handle.shutdown().await.unwrap();
        assert_eq!(core.stats.rejected.get("oversized"), Some(&1), "rejected once, not redelivered: {:?}", core.stats.rejected);
        assert_eq!(core.stats.accepted, n, "every event after it was taken");
        pump.abort();
        wpump.abort();
    });
}
