//! The one way to start the core (`towntwin_core::server::start`), as a caller meets it: it returns once it
//! is subscribed and its API is listening, so a stream published right after it returns is taken whole;
//! its notices stream and its HTTP API are live; shutdown hands back the core with everything committed.
//! A broker that never answers is an error within the configured time, not a hang.

use std::time::Duration;

use crate::common::{publisher, root, stream};

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
        let (client, pump) = publisher(&ep, "server-test-publisher").await;
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

        // Another task holds the core for a moment as the service stops (a drill's panel upgrades its weak
        // hold for one request, an evaluator's observation as the drill ends): the stop waits for it.
        let (weak, (held_tx, held_rx)) = (std::sync::Arc::downgrade(handle.core()), std::sync::mpsc::channel());
        let holder = std::thread::spawn(move || {
            let held = weak.upgrade();
            held_tx.send(held.is_some()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        assert!(held_rx.recv().unwrap(), "the core was there to hold");
        let core = handle.shutdown().await.unwrap();
        holder.join().unwrap();
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
    let mut cfg = CoreConfig::new(small(1, 1, 1), rules, policy, None::<std::path::PathBuf>, IngestConfig::new("127.0.0.1", port));
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

/// The partitioned core (`IngestConfig::partitions`: batches decoded on their own threads ahead of the one
/// writer) makes the same work orders as the single one. Both cores subscribe to the same broker at once,
/// each with its own session and store, and take the same stream: a town day with hostile messages and
/// duplicates mixed in. Their orders (every field: id, rule, key, times, state, level, history), their
/// counts of accepted, duplicate and rejected messages, and the events their stores logged must be equal.
#[test]
fn partitions_make_the_same_orders() {
    let dir = tempfile::tempdir().unwrap();
    let town = small(8, 3, 2);
    let (day, _) = stream(&town, 1);
    // The day, with a duplicate of every 50th message, and hostile ones: not JSON, an unknown device, and
    // an event from far in the future.
    let mut msgs: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, m) in day.iter().enumerate() {
        msgs.push((m.topic().to_string(), m.payload.to_vec()));
        if i % 50 == 0 {
            msgs.push((m.topic().to_string(), m.payload.to_vec()));
        }
        if i % 997 == 0 {
            msgs.push((m.topic().to_string(), b"{not json".to_vec()));
            // A device the registry does not know, on its own topic.
            let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let device = body["source"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
            let forged = String::from_utf8(m.payload.to_vec()).unwrap().replace(&device, &format!("{device}x"));
            msgs.push((m.topic().replace(&device, &format!("{device}x")), forged.into_bytes()));
            let future = String::from_utf8(m.payload.to_vec()).unwrap().replacen("\"time\":\"2", "\"time\":\"3", 1);
            msgs.push((m.topic().to_string(), future.into_bytes()));
        }
    }
    let n = msgs.len() as u64;

    let ep = towntwin_harness::broker::start_embedded().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut handles = Vec::new();
        for partitions in [1, 4] {
            let (rules, policy) = inputs();
            let ingest = IngestConfig { client_id: format!("partitions-{partitions}"), partitions, batch_max: 100, ..IngestConfig::new(&ep.host, ep.port) };
            let cfg = CoreConfig::new(town.clone(), rules, policy, Some(dir.path().join(format!("core-{partitions}.db"))), ingest);
            handles.push(server::start(cfg).await.unwrap());
        }
        let (client, pump) = publisher(&ep, "partitions-test-publisher").await;
        for (topic, payload) in &msgs {
            client.publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
        }
        for h in &handles {
            let mut received = h.received();
            tokio::time::timeout(Duration::from_secs(120), received.wait_for(|&got| got >= n)).await.expect("each core takes the whole stream").unwrap();
        }
        let mut cores = Vec::new();
        for h in handles {
            cores.push(h.shutdown().await.unwrap());
        }
        let (one, four) = (&cores[0], &cores[1]);
        assert!(one.orders.orders.len() > 10, "a day makes orders: {}", one.orders.orders.len());
        assert!(one.stats.duplicates >= (day.len() / 50) as u64, "the duplicates were seen: {:?}", one.stats);
        // (A clock tick or a hotline call forged this way is no unknown device: most are.)
        for reason in ["malformed_json", "unknown_device", "out_of_window"] {
            assert!(one.stats.rejected.get(reason).copied().unwrap_or(0) > 0, "no {reason} among {:?}", one.stats.rejected);
        }
        assert_eq!(one.stats.accepted, four.stats.accepted);
        assert_eq!(one.stats.duplicates, four.stats.duplicates);
        assert_eq!(one.stats.rejected, four.stats.rejected);
        assert_eq!(one.stats.findings_by_rule, four.stats.findings_by_rule);
        let orders = |c: &towntwin_core::service::Core| serde_json::to_value(&c.orders.orders).unwrap();
        assert_eq!(orders(one), orders(four), "the same orders, field for field");
        for o in &one.orders.orders {
            assert_eq!(one.store().unwrap().order_events(o.id).unwrap(), four.store().unwrap().order_events(o.id).unwrap(), "order {} history", o.id);
        }
        assert_eq!(one.store().unwrap().event_count().unwrap(), four.store().unwrap().event_count().unwrap());
        let _ = client.disconnect().await;
        pump.abort();
    });
}

/// A sample's value in a Prometheus text exposition (`name{labels} value`), summed over label sets.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The operators' side of a running core: `/metrics` scraped while it takes a stream (its counts agree with
/// the core's), `/healthz` and `/readyz` as Kubernetes reads them (ready only while subscribed and the store
/// takes writes; unhealthy once the ingest stopped), and tokens that expire or are revoked from the command
/// line while the core runs.
#[test]
fn metrics_probes_and_tokens_that_expire_or_are_revoked() {
    use towntwin_core::store::Location;
    let dir = tempfile::tempdir().unwrap();
    let db: Location = dir.path().join("core.db").into();
    let town = small(6, 2, 1);
    let (msgs, _) = stream(&town, 1);
    let n = msgs.len() as u64;
    let ep = towntwin_harness::broker::start_embedded().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (rules, policy) = inputs();
        let mut cfg = CoreConfig::new(town, rules, policy, Some(db.clone()), IngestConfig::new(&ep.host, ep.port));
        cfg.http = Some(([127, 0, 0, 1], 0).into());
        let handle = server::start(cfg).await.unwrap();
        let addr = handle.http_addr().unwrap();
        let mut received = handle.received();
        assert!(get(addr, "/healthz", "").await.starts_with("HTTP/1.1 200"));
        let ready = get(addr, "/readyz", "").await;
        assert!(ready.starts_with("HTTP/1.1 200") && ready.contains("ready"), "{ready}");

        let (client, pump) = publisher(&ep, "metrics-test-publisher").await;
        client.publish("town/E001/nonsense", QoS::AtLeastOnce, false, b"not json".to_vec()).await.unwrap();
        for m in &msgs {
            client.publish_bytes(m.topic().to_string(), QoS::AtLeastOnce, false, m.payload.clone()).await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(120), received.wait_for(|&got| got > n)).await.expect("the core takes the whole stream").unwrap();

        let metrics = get(addr, "/metrics", "").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        let (orders, accepted) = {
            let core = handle.core().lock().unwrap();
            (core.orders.orders.len() as f64, core.stats.accepted as f64)
        };
        assert_eq!(sample(&metrics, "towntwin_events_accepted_total"), accepted);
        assert_eq!(accepted, n as f64);
        assert_eq!(sample(&metrics, "towntwin_events_rejected_total"), 1.0, "the one bad message, by reason");
        assert!(metrics.contains("towntwin_events_rejected_total{reason="), "{metrics}");
        assert_eq!(sample(&metrics, "towntwin_orders"), orders, "orders by state and loop add up to all orders");
        assert!(orders > 10.0);
        assert!(metrics.contains("towntwin_orders{state=\"") && metrics.contains("loop=\""), "{metrics}");
        assert_eq!(sample(&metrics, "towntwin_messages_received_total"), (n + 1) as f64);
        let batches = sample(&metrics, "towntwin_batches_committed_total");
        assert!(batches >= 1.0);
        assert_eq!(sample(&metrics, "towntwin_batch_seconds_count"), batches, "one latency per batch committed");
        assert!(sample(&metrics, "towntwin_batch_seconds_sum") > 0.0);
        assert_eq!(sample(&metrics, "towntwin_broker_connected"), 1.0);
        assert_eq!(sample(&metrics, "towntwin_broker_connects_total"), 1.0);
        assert_eq!(sample(&metrics, "towntwin_broker_lag_messages"), 0.0, "everything read was committed");
        assert!(metrics.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");

        // Tokens from the command line, beside the running core: one valid, then revoked; one expired.
        let issued = std::process::Command::new(env!("CARGO_BIN_EXE_towntwin"))
            .args(["core", "token", "issue", "--principal", "town", "--expires-in", "1d", "--store"])
            .arg(dir.path().join("core.db"))
            .output()
            .unwrap();
        assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
        assert!(String::from_utf8_lossy(&issued.stderr).contains("valid until"));
        let token = String::from_utf8_lossy(&issued.stdout).trim().to_string();
        assert!(get(addr, "/orders", &token).await.starts_with("HTTP/1.1 200"));
        let revoke = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_towntwin"))
                .args(["core", "token", "revoke"])
                .args(args)
                .arg("--store")
                .arg(dir.path().join("core.db"))
                .output()
                .unwrap()
        };
        let o = revoke(&["--token", &token]);
        assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("revoked a token of town"), "{}", String::from_utf8_lossy(&o.stderr));
        let refused = get(addr, "/orders", &token).await;
        assert!(refused.starts_with("HTTP/1.1 401"), "a revoked token is refused at once: {refused}");
        let o = revoke(&["--token", &token]);
        assert_eq!(o.status.code(), Some(2), "revoking it again matches nothing: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("no valid token matched"));
        let expired = towntwin_core::auth::issue_into(&db, &"committee:C01".parse().unwrap(), Some(towntwin_core::auth::wall_ms() - 1)).unwrap();
        assert!(get(addr, "/orders", &expired).await.starts_with("HTTP/1.1 401"), "an expired token is refused");
        let bad = std::process::Command::new(env!("CARGO_BIN_EXE_towntwin"))
            .args(["core", "token", "issue", "--principal", "town", "--expires-in", "3 weeks"])
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&bad.stderr).contains("expected a whole number"), "{}", String::from_utf8_lossy(&bad.stderr));
        let audit = towntwin_core::store::Reader::open(&db).unwrap().audit_entries().unwrap();
        assert_eq!(audit.iter().filter(|s| s.entry.what == "token.revoke").count(), 1);
        assert!(towntwin_core::store::Reader::open(&db).unwrap().verify_audit(None).is_ok());

        // The store stops taking writes: the next batch fails, the ingest stops, and the probes say so.
        handle.core().lock().unwrap().store().unwrap().limit_pages(0).unwrap();
        let (extra, _) = stream(&small(6, 2, 1), 2);
        for m in extra.iter().skip(msgs.len()).take(500) {
            client.publish_bytes(m.topic().to_string(), QoS::AtLeastOnce, false, m.payload.clone()).await.unwrap();
        }
        let t0 = std::time::Instant::now();
        loop {
            let health = get(addr, "/healthz", "").await;
            if health.starts_with("HTTP/1.1 503") {
                assert!(health.contains("ingest loop has stopped"), "{health}");
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "still healthy 30 s after the store failed: {health}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ready = get(addr, "/readyz", "").await;
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        let metrics = get(addr, "/metrics", "").await;
        assert_eq!(sample(&metrics, "towntwin_ingest_running"), 0.0);
        let _ = client.disconnect().await;
        pump.abort();
        let _ = handle.shutdown().await;
    });
}
