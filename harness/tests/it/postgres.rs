//! PostgreSQL as the core's store, as a user meets it: a core over the broker writes a town's schema and
//! resumes from it (a stream sent again is logged once), one core per town (the advisory lock), tokens and
//! the audit log through the command line, and bad URLs refused with what was wrong. The whole town's day
//! through both stores is compared in `experiment.rs`.

use std::process::Command;
use std::time::Duration;

use crate::common::{publisher, reference, root, stream};

use rumqttc::QoS;
use towntwin_core::ingest::IngestConfig;
use towntwin_core::orders::Policy;
use towntwin_core::rules::RuleSet;
use towntwin_core::server::{self, CoreConfig};
use towntwin_core::store::{Reader, Store, StoreError};
use towntwin_harness::postgres::Postgres;
use towntwin_sim::generate::small;

fn towntwin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_towntwin"))
}

#[test]
fn a_core_over_the_broker_writes_postgres_holds_the_town_and_resumes() {
    if !Postgres::available_for_test() {
        return;
    }
    let pg = Postgres::start().unwrap();
    let at = pg.location("town_a");
    let town = small(6, 2, 1);
    let (msgs, _) = stream(&town, 1);
    let n = msgs.len() as u64;
    let expected = reference(&town, &msgs);
    let ep = towntwin_harness::broker::start_embedded().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let publish_all = |client_id: &'static str| {
        let (ep, msgs) = (ep.clone(), msgs.clone());
        async move {
            let (client, pump) = publisher(&ep, client_id).await;
            for m in &msgs {
                client.publish_bytes(m.topic().to_string(), QoS::AtLeastOnce, false, m.payload.clone()).await.unwrap();
            }
            (client, pump)
        }
    };
    for (round, client_id) in [(0, "pg-publisher-1"), (1, "pg-publisher-2")] {
        rt.block_on(async {
            let (rules, policy) =
                (RuleSet::load(&root().join("assets/rules.ron")).unwrap(), Policy::load(&root().join("scenarios/policies/standard.ron")).unwrap());
            let cfg = CoreConfig::new(town.clone(), rules, policy, Some(at.clone()), IngestConfig::new(&ep.host, ep.port));
            let handle = server::start(cfg).await.unwrap();
            // One writer per town: while this core runs, another is refused, saying why.
            match Store::open(&at) {
                Err(e @ StoreError::Held { .. }) => assert!(e.to_string().contains("another core holds"), "{e}"),
                Err(e) => panic!("a second writer must be refused as held, not: {e}"),
                Ok(_) => panic!("a second writer was let in beside a running core"),
            }
            let mut received = handle.received();
            let (client, pump) = publish_all(client_id).await;
            tokio::time::timeout(Duration::from_secs(120), received.wait_for(|&got| got >= n)).await.expect("the core takes the whole stream").unwrap();
            let core = handle.shutdown().await.unwrap();
            // The first time every event is new; sent again to the resumed core, every one is a duplicate.
            if round == 0 {
                assert_eq!((core.stats.accepted, core.stats.duplicates), (n, 0));
            } else {
                assert_eq!((core.stats.accepted, core.stats.duplicates), (0, n), "a stream sent again is logged once");
            }
            drop(core);
            let _ = client.disconnect().await;
            pump.abort();
        });
        let r = Reader::open(&at).unwrap();
        assert_eq!(r.event_count().unwrap(), n, "round {round}");
        let stored: Vec<(String, String, i64)> = r.orders().unwrap().into_iter().map(|o| (o.rule, o.key, o.created_at)).collect();
        assert!(stored.len() > 10, "{} orders", stored.len());
        assert_eq!(stored, expected, "round {round}: the orders of an uninterrupted in-process core");
        assert!(r.verify_audit(None).unwrap().entries > 0);
    }
    // The core let go of the town when it stopped: a writer may open it again.
    drop(Store::open(&at).unwrap());
}

#[test]
fn tokens_audit_and_bad_postgres_urls_from_the_command_line() {
    if !Postgres::available_for_test() {
        return;
    }
    let pg = Postgres::start().unwrap();
    let url = pg.url("town_b");
    // A token into a schema no core has opened yet: the schema is made, the token kept as its hash, audited.
    let o = towntwin().args(["core", "token", "issue", "--principal", "committee:C01", "--store", &url]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(token.len(), 64, "{token}");
    let r = Reader::open(pg.location("town_b")).unwrap();
    assert_eq!(r.tokens().unwrap(), vec![(towntwin_core::auth::hash(&token), "committee:C01".to_string())]);
    let o = towntwin().args(["core", "audit", "verify", "--store", &url]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("audit log intact: 1 entries") && out.contains("schema=town_b"), "{out}");
    // The same chain goes on from the command line and from a core: a second token, then verify.
    let o = towntwin().args(["core", "token", "issue", "--principal", "town", "--db", &url]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(r.verify_audit(None).unwrap().entries, 2);

    // A town named by a reserved word is a town like any other (its name is quoted in every statement).
    let o = towntwin().args(["core", "token", "issue", "--principal", "town", "--store", &pg.url("order")]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(Reader::open(pg.location("order")).unwrap().tokens().unwrap().len(), 1);

    // Refused, saying what was wrong: a schema that is not a name, a store that is not there, a server
    // that does not answer (quickly, not after a long hang).
    let o = towntwin().args(["core", "audit", "verify", "--store", &pg.url("Bad-Name")]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("schema") && err.contains("Bad-Name"), "{err}");
    let o = towntwin().args(["core", "audit", "verify", "--store", &pg.url("nobody_here")]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no such store") && err.contains("nobody_here"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t0 = std::time::Instant::now();
    let o = towntwin().args(["core", "audit", "verify", "--store", &format!("postgres://postgres:hush@127.0.0.1:{closed}/postgres")]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("cannot connect") && err.contains(&format!("127.0.0.1:{closed}")), "{err}");
    assert!(!err.contains("hush"), "the password is never printed: {err}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

/// `towntwin core` as a process on a PostgreSQL store, its stdout's status lines as they come.
struct CoreProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl CoreProcess {
    fn start(port: u16, url: &str, town: &std::path::Path, extra: &[&str]) -> CoreProcess {
        use std::io::BufRead;
        let mut child = towntwin()
            .args(["core", "--broker", &format!("mqtt://127.0.0.1:{port}"), "--client-id", "core-town-s", "--store", url, "--town"])
            .arg(town)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        CoreProcess { child, lines }
    }

    /// Waits for a status line naming `status`; panics after `limit`.
    fn until(&self, status: &str, limit: Duration) {
        let t0 = std::time::Instant::now();
        loop {
            let left = limit.checked_sub(t0.elapsed()).unwrap_or_else(|| panic!("no {status} line in {limit:?}"));
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(&format!("\"{status}\"")) => return,
                Ok(_) => {}
                Err(e) => panic!("no {status} line in {limit:?}: {e}"),
            }
        }
    }

    /// Whether a line naming `status` came (without waiting).
    fn said(&self, status: &str) -> bool {
        self.lines.try_iter().any(|l| l.contains(&format!("\"{status}\"")))
    }
}

impl Drop for CoreProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A town with an active core and a standby on PostgreSQL: the active one is killed (SIGKILL) mid-stream,
/// the standby takes the town's lock, resumes the same broker session, and the stream ends with every event
/// logged once and the orders of an uninterrupted run. The takeover time is printed.
#[test]
fn a_standby_core_takes_over_the_town_when_the_active_one_is_killed() {
    use towntwin_sim::generate::to_ron;
    if !Postgres::available_for_test() {
        return;
    }
    let pg = Postgres::start().unwrap();
    let url = pg.url("town_s");
    let dir = tempfile::tempdir().unwrap();
    let town = small(6, 2, 1);
    let town_file = dir.path().join("town.ron");
    std::fs::write(&town_file, to_ron(&town)).unwrap();
    let (msgs, _) = stream(&town, 2);
    let n = msgs.len() as u64;
    let ep = towntwin_harness::broker::start_embedded().unwrap();

    let active = CoreProcess::start(ep.port, &url, &town_file, &[]);
    active.until("core_subscribed", Duration::from_secs(60));
    let probe_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let probes = format!("127.0.0.1:{probe_port}");
    let standby = CoreProcess::start(ep.port, &url, &town_file, &["--standby", "--http", &probes]);
    standby.until("core_standby", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!standby.said("core_loaded"), "a standby loads nothing while the town is held");
    // While it waits, its address answers the probes: alive (do not restart it), not ready (no traffic).
    let (st, body) = crate::common::http(&probes, "GET", "/healthz", None, None);
    assert_eq!((st, body["role"].as_str()), (200, Some("standby")), "{body}");
    assert_eq!(crate::common::http(&probes, "GET", "/readyz", None, None).0, 503);
    assert_eq!(crate::common::http(&probes, "GET", "/orders", None, None).0, 503, "no API before it holds the town");
    // A second standby, interrupted while it waits (as a district's stop does): it goes at once, having
    // taken nothing.
    let mut second = CoreProcess::start(ep.port, &url, &town_file, &["--standby"]);
    second.until("core_standby", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(second.child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    second.until("core_interrupted", Duration::from_secs(10));
    let st = second.child.wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(t0.elapsed() < Duration::from_secs(10), "a waiting standby stops on SIGINT: {:?}", t0.elapsed());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (client, pump) = rt.block_on(publisher(&ep, "standby-test-publisher"));
    let publish = |range: &[towntwin_sim::Message]| {
        rt.block_on(async {
            for m in range {
                client.publish_bytes(m.topic().to_string(), QoS::AtLeastOnce, false, m.payload.clone()).await.unwrap();
            }
        })
    };
    let logged = || Reader::open(pg.location("town_s")).and_then(|r| r.event_count()).unwrap_or(0);
    let (a, b) = (msgs.len() * 2 / 5, msgs.len() * 3 / 5);
    publish(&msgs[..a]);
    let t0 = std::time::Instant::now();
    while logged() < a as u64 / 4 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the active core takes the stream");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed_at = std::time::Instant::now();
    drop(active); // SIGKILL, mid-stream
    let at_kill = logged();
    publish(&msgs[a..b]); // while the town has no active core
    standby.until("core_subscribed", Duration::from_secs(60));
    let takeover = killed_at.elapsed();
    // Then the same address is the town's API and ready.
    assert_eq!(crate::common::http(&probes, "GET", "/readyz", None, None).0, 200);
    assert_eq!(crate::common::http(&probes, "GET", "/orders", None, None).0, 401, "the API, asking for a token");
    publish(&msgs[b..]);
    let t0 = std::time::Instant::now();
    while logged() < n {
        assert!(t0.elapsed() < Duration::from_secs(120), "the standby finishes the stream: {} of {n} logged", logged());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(standby);
    rt.block_on(async {
        let _ = client.disconnect().await;
    });
    pump.abort();
    eprintln!("takeover: {:.2} s from the SIGKILL to the standby subscribed (killed at {at_kill} of {n} events)", takeover.as_secs_f64());
    assert!(at_kill > 0 && at_kill < n, "killed mid-stream ({at_kill} of {n})");

    let r = Reader::open(pg.location("town_s")).unwrap();
    assert_eq!(r.event_count().unwrap(), n, "every event logged once");
    let ids = r.event_ids().unwrap();
    assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), ids.len());
    let stored: Vec<(String, String, i64)> = r.orders().unwrap().into_iter().map(|o| (o.rule, o.key, o.created_at)).collect();
    let want = reference(&town, &msgs);
    assert!(want.len() > 20, "{}", want.len());
    assert_eq!(stored, want, "the orders of an uninterrupted in-process run");
    assert!(r.verify_audit(None).is_ok());
}

#[test]
fn a_standby_needs_a_postgres_store() {
    let dir = tempfile::tempdir().unwrap();
    let o = towntwin().args(["core", "--broker", "mqtt://127.0.0.1:1", "--standby", "--db"]).arg(dir.path().join("core.db")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--standby") && err.contains("PostgreSQL"), "{err}");
}
