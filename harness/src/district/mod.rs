//! `towntwin district`: several towns on one broker (or a broker cluster) and one PostgreSQL, each town's
//! twin a process of its own under its own topic root and CloudEvents source, each town's core a process
//! of its own with, if asked, a standby that takes over when it dies; then every town's orders read back
//! from the store, and the district's API and console ([`serve`]) over all of them.

pub mod serve;
pub mod spec;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use towntwin_core::event::Namespace;
use towntwin_core::store::postgres::{District as Registry, RegisteredTown, Url};

pub use self::spec::{BrokerSpec, District, StoreSpec, schema_of};
use crate::load::procs::{Proc, core_ready};
use crate::status::Status;
use crate::{DataFault, UsageFault};

/// What `towntwin district run` is asked besides the file.
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    pub out: Option<PathBuf>,
    /// After the towns' days: serve the district's API and console here until interrupted.
    pub serve: Option<std::net::SocketAddr>,
    /// Kill this town's active core with SIGKILL once its store holds this many events (its standby takes
    /// over): `(town id, events)`.
    pub kill_core: Option<(String, u64)>,
    /// Restart the district's PostgreSQL (`pg_ctl stop -m fast`, then start: every core's session ends)
    /// once the first town's store holds this many events: a throwaway store (`store: Local`) only.
    pub restart_store: Option<u64>,
    /// Kill a node of the district's own broker cluster (`broker: Cluster(n)`) with SIGKILL once the towns'
    /// stores together hold this many events: `(node, events)`.
    pub kill_node: Option<(NodeChoice, u64)>,
}

/// Which node `--kill-node` kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChoice {
    /// Node `n` (from 1).
    Number(usize),
    /// The first node that does not lead the stream of QoS 1 messages (`$MQTT_msgs`): the death nats-server
    /// survives (a dead stream leader under write can stall the cluster: [A broker cluster] in the book).
    Follower,
}

impl std::str::FromStr for NodeChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<NodeChoice, String> {
        match s {
            "follower" => Ok(NodeChoice::Follower),
            n => n
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .map(NodeChoice::Number)
                .ok_or_else(|| format!("{s:?}: expected a node number from 1, or `follower`")),
        }
    }
}

/// The broker node a run killed.
#[derive(Debug, Clone, Serialize)]
pub struct KilledNode {
    /// From 1.
    pub node: usize,
    /// Whether it led the stream of QoS 1 messages when it was killed.
    pub led_message_stream: bool,
    /// The towns' events logged (together) when it was killed.
    pub at_events: u64,
}

/// One town's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct TownOutcome {
    pub id: String,
    pub name: String,
    pub topic_root: String,
    pub source: String,
    pub schema: String,
    pub estates: usize,
    pub devices: usize,
    /// QoS 1 events its twin published (every one must be logged once).
    pub published_qos1: u64,
    pub published: u64,
    pub events_logged: u64,
    /// Of those, events of a QoS 1 type (alarms and activities): every one the twin sent must be here.
    pub qos1_logged: u64,
    pub orders: u64,
    pub open_orders: u64,
    /// BLAKE3 of every order's rule, key and creation time in order: equal for two runs that made the same
    /// orders (a run with a core killed and one without).
    pub orders_digest: String,
    /// The same digest over the orders of every rule that reads no telemetry (all but the silence rules,
    /// which read devices' heartbeats): what a lost QoS 0 event cannot change.
    pub alarm_orders_digest: String,
    /// Orders by rule.
    pub orders_by_rule: std::collections::BTreeMap<String, u64>,
    /// Events its core refused, by reason (none expected).
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// The stream digest of its twin's run (same file and seed, same digest).
    pub digest: String,
    /// When its active core was killed: seconds from the kill until the standby was subscribed.
    pub takeover_seconds: Option<f64>,
    /// When the store was restarted: seconds from the restart's start until this town's store grew again.
    pub store_recovery_seconds: Option<f64>,
    /// When a broker node was killed: seconds from the kill until this town's store grew again (its twin's
    /// and its core's connections on the surviving nodes).
    pub node_kill_recovery_seconds: Option<f64>,
    /// QoS 0 events (telemetry) its twin published that its store does not hold: lost on the way, as
    /// QoS 0 may be (a broker node's death, say).
    pub qos0_missing: u64,
    /// The node its twin's connections start on and the node its cores connect to first (from 1; each fails
    /// over to the next nodes in turn).
    pub twin_node: usize,
    pub core_node: usize,
    /// Its serving core's ordering counters at the end, from its `/metrics`: events still held (their
    /// minute not yet whole), events that came after their minute was applied, and minutes applied before
    /// they were whole. `None` where the core could not be asked.
    pub core_events_held: Option<u64>,
    pub core_events_late: Option<u64>,
    pub core_minutes_forced: Option<u64>,
    /// Whether its standby core took the town over (its active core was killed, or stopped when the store
    /// went away).
    pub standby_took_over: bool,
    /// Standby cores started again after a takeover (the dead active core's place taken by a new standby,
    /// as a supervisor would), so that the town always has one.
    pub standbys_rearmed: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub district: String,
    pub file: String,
    pub broker: String,
    pub store: String,
    pub standby: bool,
    /// The broker node killed (`--kill-node`).
    pub killed_node: Option<KilledNode>,
    pub towns: Vec<TownOutcome>,
    pub wall_seconds: f64,
}

/// A town made ready to run: its files in the results folder.
struct Prepared {
    ns: Namespace,
    name: String,
    scenario: PathBuf,
    town_file: PathBuf,
    town: towntwin_core::town::Town,
}

/// Writes each town's scenario (its seed, days and town) and, for a generated town, its town file, into
/// `out/towns/{id}/`.
fn prepare(d: &District, out: &Path) -> Result<Vec<Prepared>> {
    let mut all = Vec::new();
    for ((ns, scenario_file), t) in d.towns.iter().zip(&d.spec.towns) {
        let dir = out.join("towns").join(ns.id());
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let loaded = towntwin_sim::Scenario::load(scenario_file).map_err(DataFault)?;
        let mut scenario = loaded.scenario;
        let (town, town_file) = match t.generate {
            Some(g) => {
                let mut town = towntwin_sim::generate::small(g.seed, g.estates, g.roads);
                town.name = t.name.clone();
                let f = dir.join("town.ron");
                std::fs::write(&f, towntwin_sim::generate::to_ron(&town)).with_context(|| format!("cannot write {}", f.display()))?;
                (town, f)
            }
            None => {
                let town = towntwin_core::town::Town::load(&loaded.town_file).map_err(DataFault)?;
                let f = std::fs::canonicalize(&loaded.town_file).with_context(|| format!("the town file {}", loaded.town_file.display()))?;
                (town, f)
            }
        };
        scenario.town = std::fs::canonicalize(&town_file)?.display().to_string();
        scenario.seed = t.seed.unwrap_or(scenario.seed);
        scenario.days = d.spec.days.unwrap_or(scenario.days);
        scenario.name = format!("{}-{}", d.spec.name, ns.id());
        let f = dir.join("scenario.ron");
        let text = ron::ser::to_string_pretty(&scenario, ron::ser::PrettyConfig::new().struct_names(false)).context("cannot write a scenario")?;
        std::fs::write(
            &f,
            format!("// {} in the district {}: written by `towntwin district run` from {}.\n{text}\n", t.name, d.spec.name, scenario_file.display()),
        )?;
        // Checked as `towntwin run` will read it.
        towntwin_sim::Scenario::load(&f).map_err(DataFault)?;
        all.push(Prepared { ns: ns.clone(), name: t.name.clone(), scenario: f, town_file, town });
    }
    Ok(all)
}

/// The broker the towns share, kept alive while the district runs.
enum Broker {
    Embedded(Proc),
    Cluster(crate::nats::NatsCluster),
    External,
}

/// The store the towns share, kept alive while the district runs.
enum Store {
    Local(crate::postgres::Postgres),
    Url,
}

/// A town's cores: the active one and its standby.
struct Cores {
    active: Proc,
    standby: Option<Proc>,
    /// Standbys started again after a takeover.
    rearmed: u32,
}

/// Whether a core has said it is subscribed (a standby: it has taken its town over).
fn subscribed(core: &Proc) -> bool {
    let lines = core.lines.lock().map(|l| l.clone()).unwrap_or_default();
    Status::last(&lines, |s| matches!(s, Status::CoreSubscribed { .. }).then_some(())).is_some()
}

/// The `/metrics` text of the town's serving core (its standby once that has taken over), if it answers.
fn serving_metrics(c: &Cores) -> Option<String> {
    let serving = c.standby.as_ref().filter(|s| subscribed(s)).unwrap_or(&c.active);
    let lines = serving.lines.lock().map(|l| l.clone()).unwrap_or_default();
    let http = Status::last(&lines, |s| match s {
        Status::CoreSubscribed { http, .. } => http.clone(),
        _ => None,
    })?;
    let rt = crate::runtime().ok()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().ok()?;
        client.get(format!("{}/metrics", http.trim_end_matches('/'))).send().await.ok()?.error_for_status().ok()?.text().await.ok()
    })
}

/// A metric's value in Prometheus' text format (the first sample of that name, without labels).
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut fields = l.split_whitespace();
        let (n, v) = (fields.next()?, fields.next()?);
        (n == name).then(|| v.parse::<f64>().ok().map(|v| v.max(0.0) as u64)).flatten()
    })
}

/// A town's schema in the district's database.
fn town_url(store: &Url, ns: &Namespace) -> Result<Url> {
    store.in_schema(&schema_of(ns.id())).map_err(|e| anyhow!(e))
}

/// How many events a town's store holds, read again and again on one connection (opened again only after
/// it failed: a store restarting).
struct Logged {
    url: Url,
    reader: Option<towntwin_core::store::postgres::Reader>,
}

impl Logged {
    fn new(url: Url) -> Logged {
        Logged { url, reader: None }
    }

    /// `None` while the store cannot be read. A connection that a restart ended is opened again at once.
    fn count(&mut self) -> Option<u64> {
        if let Some(n) = self.reader.as_ref().and_then(|r| r.event_count().ok()) {
            return Some(n);
        }
        self.reader = towntwin_core::store::postgres::Reader::open(&self.url).ok();
        self.reader.as_ref()?.event_count().ok()
    }

    /// Its events of a QoS 1 type; `None` while the store cannot be read.
    fn qos1(&mut self) -> Option<u64> {
        self.count()?;
        qos1_of(self.reader.as_ref()?).ok()
    }
}

/// What a supervisor does: when a town's active core has died and its standby has taken over, the standby
/// is the town's active core and a new standby is started in the dead one's place.
fn rearm(cores: &mut Cores, standby_args: impl FnOnce() -> Vec<String>) -> Result<()> {
    if !cores.standby.as_ref().is_some_and(subscribed) || !cores.active.exited() {
        return Ok(());
    }
    let fresh = Proc::start("standby core", standby_args(), |s| matches!(s, Status::CoreStandby { .. }), Duration::from_secs(60))?;
    if let Some(taken_over) = cores.standby.replace(fresh) {
        cores.active = taken_over;
    }
    cores.rearmed += 1;
    Ok(())
}

fn core_args(broker: &str, store: &Url, p: &Prepared, standby: bool, batch_max: Option<u16>) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "core".into(),
        "--broker".into(),
        broker.into(),
        "--store".into(),
        town_url(store, &p.ns).map(|u| u.full()).unwrap_or_default(),
        "--town".into(),
        p.town_file.display().to_string(),
        "--client-id".into(),
        format!("core-{}", p.ns.id()),
        "--town-id".into(),
        p.ns.id().into(),
        "--http".into(),
        "127.0.0.1:0".into(),
        // A district's towns may be on a cluster that reorders their events: every core orders them by
        // minutes, on any broker, so a town's orders are the same on each.
        "--order".into(),
        "minutes".into(),
    ];
    if standby {
        a.push("--standby".into());
    }
    if let Some(n) = batch_max {
        a.extend(["--batch-max".into(), n.to_string()]);
    }
    a
}

/// Runs a district: the broker, the store, every town's core (and standby), every town's twin at once;
/// waits until every town's store holds its twin's QoS 1 events; reads back every town's orders; then,
/// with `serve`, serves the district's API and console until interrupted.
pub fn run(file: &Path, opts: &RunOpts) -> Result<Outcome> {
    let d = District::load(file).map_err(DataFault)?;
    if let Some((id, _)) = &opts.kill_core {
        if !d.spec.standby {
            return Err(UsageFault(format!("--kill-core {id}: the district file has no standby cores (standby: true) to take over")).into());
        }
        if !d.towns.iter().any(|(ns, _)| ns.id() == id) {
            return Err(UsageFault(format!("--kill-core {id}: no such town in {}", file.display())).into());
        }
    }
    if let Some((node, _)) = &opts.kill_node {
        match (&d.spec.broker, node) {
            (BrokerSpec::Cluster(n), NodeChoice::Number(k)) if k > n => {
                return Err(UsageFault(format!("--kill-node {k}: the district's cluster has {n} nodes")).into());
            }
            (BrokerSpec::Cluster(n), _) if *n < 3 => {
                return Err(UsageFault(format!("--kill-node: a cluster of {n} nodes has no quorum without one (3 or more)")).into());
            }
            (BrokerSpec::Cluster(_), _) => {}
            _ => return Err(UsageFault("--kill-node: the district kills a node only of a cluster of its own (broker: Cluster(n))".into()).into()),
        }
    }
    if opts.restart_store.is_some() && d.spec.store != StoreSpec::Local {
        return Err(UsageFault("--restart-store: the district restarts only a PostgreSQL of its own (store: Local)".into()).into());
    }
    let out = opts.out.clone().unwrap_or_else(|| crate::results::stamped(&format!("district-{}", d.spec.name)));
    crate::results::claim(&out, "a district run")?;
    let wall = Instant::now();
    let prepared = prepare(&d, &out)?;

    let (store, store_url) = match &d.spec.store {
        StoreSpec::Local => {
            let pg = crate::postgres::Postgres::start().context("cannot start the district's PostgreSQL")?;
            let url: Url = pg.url("towntwin").parse().map_err(|e: String| anyhow!(e))?;
            (Store::Local(pg), url)
        }
        StoreSpec::Url(u) => (Store::Url, u.parse().map_err(|e: String| anyhow!(e))?),
    };
    let registry = Registry::open(&store_url).context("cannot open the district's registry")?;
    for p in &prepared {
        // A town's schema must hold no other run's events: a district run starts from empty stores.
        let url = town_url(&store_url, &p.ns)?;
        if let Ok(r) = towntwin_core::store::postgres::Reader::open(&url)
            && r.last_seq().unwrap_or(0) > 0
        {
            return Err(UsageFault(format!(
                "{url} already holds a run's events: a district run starts from empty schemas (drop the schema or use another database)"
            ))
            .into());
        }
        let areas = p.town.estates.iter().map(|e| (e.id.clone(), Some(e.committee.clone()))).chain(p.town.roads.iter().map(|r| (r.id.clone(), None))).collect();
        registry.register(&RegisteredTown { id: p.ns.id().into(), name: p.name.clone(), schema: schema_of(p.ns.id()) }, areas)?;
    }

    let (mut broker, broker_url, nodes) = match &d.spec.broker {
        BrokerSpec::Embedded => {
            let (proc, ep) = crate::load::procs::start_broker()?;
            (Broker::Embedded(proc), format!("mqtt://{}:{}", ep.host, ep.port), vec![format!("mqtt://{}:{}", ep.host, ep.port)])
        }
        BrokerSpec::Cluster(n) => {
            let c = crate::nats::NatsCluster::start(*n).context("cannot start the broker cluster")?;
            let nodes = (0..*n).map(|i| c.endpoint(i)).map(|e| format!("mqtt://{}:{}", e.host, e.port)).collect();
            let url = c.url();
            (Broker::Cluster(c), url, nodes)
        }
        BrokerSpec::External(urls) => {
            let mut hosts = Vec::new();
            for u in urls {
                let ep = crate::broker::reach(u)?;
                hosts.push(format!("{}:{}", ep.host, ep.port));
            }
            (Broker::External, format!("mqtt://{}", hosts.join(",")), urls.clone())
        }
    };

    // Every town's core, subscribed before any twin publishes; each standby waiting on its town's lock.
    let batch_max = matches!(d.spec.broker, BrokerSpec::Cluster(_)).then_some(crate::nats::CLUSTER_BATCH_MAX);
    // On a cluster, town i's twin starts on node i and its cores on node i + 1 (each failing over to the
    // next nodes in turn): a node's death takes some town's twin connections and another's core.
    let start_at = |k: usize| {
        let mut n = nodes.clone();
        n.rotate_left(k % nodes.len());
        format!("mqtt://{}", n.iter().map(|u| u.trim_start_matches("mqtt://")).collect::<Vec<_>>().join(","))
    };
    let core_broker: Vec<String> = (0..prepared.len()).map(|i| start_at(i + 1)).collect();
    let mut cores = Vec::new();
    for (i, p) in prepared.iter().enumerate() {
        let broker_url = &core_broker[i];
        let active = Proc::start("core", core_args(broker_url, &store_url, p, false, batch_max), core_ready, Duration::from_secs(60))
            .with_context(|| format!("town {}: the core did not start", p.ns.id()))?;
        let standby = if d.spec.standby {
            Some(
                Proc::start(
                    "standby core",
                    core_args(broker_url, &store_url, p, true, batch_max),
                    |s| matches!(s, Status::CoreStandby { .. }),
                    Duration::from_secs(60),
                )
                .with_context(|| format!("town {}: the standby core did not start", p.ns.id()))?,
            )
        } else {
            None
        };
        cores.push(Cores { active, standby, rearmed: 0 });
    }
    println!("district {}: {} towns, broker {broker_url}, store {}", d.spec.name, prepared.len(), database(&store_url));

    // Every town's twin at once, each on a node of its own in turn.
    let mut twins: Vec<Child> = Vec::new();
    for (i, p) in prepared.iter().enumerate() {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let child = Command::new(exe)
            .args(["run", "--no-core", "--no-observe", "-q", "--scenario"])
            .arg(&p.scenario)
            .args(["--broker", &start_at(i), "--town-id", p.ns.id(), "--out"])
            .arg(out.join("towns").join(p.ns.id()).join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("town {}: cannot start its twin", p.ns.id()))?;
        twins.push(child);
    }
    let mut takeover = None;
    if let Some((id, after)) = &opts.kill_core {
        let i = prepared.iter().position(|p| p.ns.id() == id).ok_or_else(|| anyhow!("no town {id}"))?;
        takeover = Some((i, kill_active(&mut cores[i], &store_url, &prepared[i], *after)?));
    }
    let (mut killed_node, mut regrowth) = (None, None);
    if let (Some((node, after)), Broker::Cluster(c)) = (opts.kill_node, &mut broker) {
        let (k, r) = kill_node(c, node, &store_url, &prepared, after)?;
        (killed_node, regrowth) = (Some(k), Some(r));
    }
    let mut recovery = vec![None; prepared.len()];
    if let (Some(after), Store::Local(pg)) = (opts.restart_store, &store) {
        recovery = restart_store(pg, &store_url, &prepared, after)?.into_iter().map(Some).collect();
    }
    // Until every twin has finished: a town whose standby took over gets a new standby.
    let mut ended = vec![None; twins.len()];
    while ended.iter().any(Option::is_none) {
        for (i, t) in twins.iter_mut().enumerate() {
            if ended[i].is_none() {
                ended[i] = t.try_wait().with_context(|| format!("town {}: its twin", prepared[i].ns.id()))?;
            }
        }
        if let Some(r) = &mut regrowth {
            let running: Vec<bool> = ended.iter().map(Option::is_none).collect();
            r.poll(&running, &prepared, Duration::from_secs(180))?;
        }
        for ((c, p), b) in cores.iter_mut().zip(&prepared).zip(&core_broker) {
            rearm(c, || core_args(b, &store_url, p, true, batch_max)).with_context(|| format!("town {}: a new standby core", p.ns.id()))?;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (p, status) in prepared.iter().zip(ended.into_iter().flatten()) {
        if !status.success() {
            bail!("town {}: its twin failed ({status}); see its messages above", p.ns.id());
        }
    }
    if let Some(r) = &mut regrowth {
        r.settle(Duration::from_secs(180));
    }
    // A takeover near the end: the town still gets its new standby before the district reports.
    for ((c, p), b) in cores.iter_mut().zip(&prepared).zip(&core_broker) {
        let took_over = c.standby.as_ref().is_some_and(subscribed);
        if took_over {
            // The stopped core may take a moment to exit (it closes its connections).
            let limit = Instant::now() + Duration::from_secs(60);
            while !c.active.exited() && Instant::now() < limit {
                std::thread::sleep(Duration::from_millis(20));
            }
            rearm(c, || core_args(b, &store_url, p, true, batch_max)).with_context(|| format!("town {}: a new standby core", p.ns.id()))?;
        }
    }

    // The rules every core runs (the default set), for the orders that read telemetry.
    let rules = towntwin_core::rules::RuleSet::load(&crate::setup::asset("assets/rules.ron")).map_err(|e| anyhow!("{e}"))?;
    let silence: Vec<String> = rules.rules.iter().filter(|r| matches!(r.kind, towntwin_core::rules::RuleKind::Silence { .. })).map(|r| r.id.clone()).collect();
    let mut towns = Vec::new();
    let node_recovery = |i: usize| regrowth.as_ref().and_then(|r| r.seconds[i]);
    for (i, p) in prepared.iter().enumerate() {
        let summary_file = out.join("towns").join(p.ns.id()).join("run").join("summary.json");
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary_file).with_context(|| format!("{}", summary_file.display()))?)?;
        let published_qos1 = summary["network"]["published_qos1"].as_u64().unwrap_or(0);
        let published = summary["network"]["published"].as_u64().unwrap_or(0);
        let url = town_url(&store_url, &p.ns)?;
        let logged = drained(&url, published_qos1, Duration::from_secs(180)).with_context(|| format!("town {}", p.ns.id()))?;
        let reader = towntwin_core::store::postgres::Reader::open(&url)?;
        let orders = reader.orders()?;
        let qos1_logged = qos1_of(&reader)?;
        let takeover_seconds = takeover.filter(|(k, _)| *k == i).map(|(_, s)| s);
        let standby_took_over = cores[i].rearmed > 0 || cores[i].standby.as_ref().is_some_and(subscribed);
        let metrics = serving_metrics(&cores[i]);
        let counter = |name: &str| metrics.as_deref().and_then(|m| metric(m, name));
        towns.push(TownOutcome {
            id: p.ns.id().into(),
            name: p.name.clone(),
            topic_root: p.ns.events_filter(),
            source: p.ns.source().into(),
            schema: schema_of(p.ns.id()),
            estates: p.town.estates.len(),
            devices: p.town.estates.iter().map(|e| e.devices.len()).sum::<usize>() + p.town.roads.iter().map(|r| r.devices.len()).sum::<usize>(),
            published_qos1,
            published,
            events_logged: logged,
            qos1_logged,
            orders: orders.len() as u64,
            open_orders: orders.iter().filter(|o| o.state.is_open()).count() as u64,
            orders_digest: orders_digest(orders.iter()),
            alarm_orders_digest: orders_digest(orders.iter().filter(|o| !silence.contains(&o.rule))),
            rejected: reader.rejects()?,
            orders_by_rule: orders.iter().fold(Default::default(), |mut m, o| {
                *m.entry(o.rule.clone()).or_default() += 1;
                m
            }),
            digest: summary["stream_digest"].as_str().unwrap_or_default().to_string(),
            takeover_seconds,
            store_recovery_seconds: recovery[i],
            node_kill_recovery_seconds: node_recovery(i),
            qos0_missing: (published - published_qos1).saturating_sub(logged - qos1_logged),
            twin_node: i % nodes.len() + 1,
            core_node: (i + 1) % nodes.len() + 1,
            core_events_held: counter("towntwin_events_held"),
            core_events_late: counter("towntwin_events_late_total"),
            core_minutes_forced: counter("towntwin_minutes_forced_total"),
            standby_took_over,
            standbys_rearmed: cores[i].rearmed,
        });
    }
    let outcome = Outcome {
        district: d.spec.name.clone(),
        file: file.display().to_string(),
        broker: broker_url.clone(),
        store: database(&store_url),
        standby: d.spec.standby,
        killed_node,
        towns,
        wall_seconds: wall.elapsed().as_secs_f64(),
    };
    std::fs::write(out.join("district.json"), serde_json::to_string_pretty(&outcome)?)?;
    print!("{}", render(&outcome));

    if let Some(addr) = opts.serve {
        let token = towntwin_core::auth::new_token();
        registry.issue_token(&towntwin_core::auth::hash(&token), "district", towntwin_core::auth::wall_ms(), None)?;
        let rt = crate::runtime()?;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            let at = listener.local_addr()?;
            Status::DistrictServing { http: format!("http://{at}"), token: token.clone(), store: store_url.full() }.print();
            let app = serve::router(serve::State::open(&store_url)?);
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .context("the district's server")
        })?;
    }
    // Every core asked at once (SIGINT), then each waited for: the stop takes as long as the slowest core,
    // not the sum of them.
    for c in &cores {
        for p in c.standby.iter().chain([&c.active]) {
            let _ = p.signal(nix::sys::signal::Signal::SIGINT);
        }
    }
    for c in &mut cores {
        if let Some(s) = &mut c.standby {
            s.stop(Duration::from_secs(10));
        }
        c.active.stop(Duration::from_secs(30));
    }
    drop(registry);
    match broker {
        Broker::Embedded(mut p) => {
            p.stop(Duration::from_secs(10));
        }
        Broker::Cluster(c) => drop(c),
        Broker::External => {}
    }
    if let Store::Local(pg) = store {
        drop(pg);
    }
    Ok(outcome)
}

/// Waits until the town's store holds its core's `after`-th event, then kills the active core with SIGKILL;
/// returns the seconds from the kill until the standby said it was subscribed (it had loaded the store
/// and resumed the broker session).
fn kill_active(cores: &mut Cores, store: &Url, p: &Prepared, after: u64) -> Result<f64> {
    let mut logged = Logged::new(town_url(store, &p.ns)?);
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        let n = logged.count().unwrap_or(0);
        if n >= after {
            break;
        }
        if Instant::now() > limit {
            bail!("town {}: its store never held {after} events to kill its core after (it holds {n})", p.ns.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cores.active.kill()?;
    let killed = Instant::now();
    let standby = cores.standby.as_ref().ok_or_else(|| anyhow!("town {}: no standby core", p.ns.id()))?;
    loop {
        if subscribed(standby) {
            return Ok(killed.elapsed().as_secs_f64());
        }
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("town {}: its standby core did not take over within 60 s of the active core's kill", p.ns.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the towns' stores together hold `after` events, then kills a node of the cluster (SIGKILL).
fn kill_node(c: &mut crate::nats::NatsCluster, node: NodeChoice, store: &Url, towns: &[Prepared], after: u64) -> Result<(KilledNode, Regrowth)> {
    let mut logged: Vec<Logged> = towns.iter().map(|p| town_url(store, &p.ns).map(Logged::new)).collect::<Result<_>>()?;
    let limit = Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    while n < after {
        n = logged.iter_mut().map(|l| l.count().unwrap_or(0)).sum();
        if Instant::now() > limit {
            bail!("the towns' stores never held {after} events to kill a broker node after (they hold {n})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let leader = c.stream_leader("$MQTT_msgs");
    let i = match node {
        NodeChoice::Number(k) => k - 1,
        NodeChoice::Follower => (0..c.node_count()).find(|&i| Some(i) != leader).unwrap_or(0),
    };
    let before = logged.iter_mut().map(|l| l.count().unwrap_or(0)).collect();
    c.kill(i);
    println!(
        "district: broker node {} killed (SIGKILL) at {n} events logged{}",
        i + 1,
        if leader == Some(i) { "; it led the QoS 1 message stream" } else { "" }
    );
    let regrowth = Regrowth { since: Instant::now(), before, logged, seconds: vec![None; towns.len()] };
    Ok((KilledNode { node: i + 1, led_message_stream: leader == Some(i), at_events: n }, regrowth))
}

/// After a fault: for each town, the seconds until its store grew again (none for a town that had nothing
/// more to log).
struct Regrowth {
    since: Instant,
    before: Vec<u64>,
    logged: Vec<Logged>,
    seconds: Vec<Option<f64>>,
}

impl Regrowth {
    /// Reads the stores once; an error when a town whose twin is still running (`running[i]`) has logged
    /// nothing for `limit` since the fault.
    fn poll(&mut self, running: &[bool], towns: &[Prepared], limit: Duration) -> Result<()> {
        self.look();
        if self.since.elapsed() > limit {
            let stuck: Vec<&str> = towns.iter().zip(&self.seconds).zip(running).filter(|((_, s), r)| s.is_none() && **r).map(|((p, _), _)| p.ns.id()).collect();
            if !stuck.is_empty() {
                bail!("{limit:?} after the fault, no new event logged for {} (whose twins still run)", stuck.join(", "));
            }
        }
        Ok(())
    }

    /// After the twins have ended: reads the stores until every town has logged again, or the stores of
    /// those that have not are still for 2 s (they had nothing more to log), at most `limit`. A town whose
    /// core is behind its twin logs after the twin ends.
    fn settle(&mut self, limit: Duration) {
        let t0 = Instant::now();
        let (mut last, mut since) = (Vec::new(), Instant::now());
        while self.seconds.iter().any(Option::is_none) && t0.elapsed() < limit {
            let now = self.look();
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() > Duration::from_secs(2) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reads each town's store once, noting the towns that have grown since the fault; their counts.
    fn look(&mut self) -> Vec<Option<u64>> {
        let mut counts = Vec::with_capacity(self.logged.len());
        for (j, l) in self.logged.iter_mut().enumerate() {
            let n = l.count();
            if self.seconds[j].is_none() && n.is_some_and(|m| m > self.before[j]) {
                self.seconds[j] = Some(self.since.elapsed().as_secs_f64());
            }
            counts.push(n);
        }
        counts
    }
}

/// Waits until the first town's store holds `after` events, restarts the store, and returns for each town
/// the seconds from the restart's start until its store grew again (its core, or its standby that took
/// over, committing once more).
fn restart_store(pg: &crate::postgres::Postgres, store: &Url, towns: &[Prepared], after: u64) -> Result<Vec<f64>> {
    let mut logged: Vec<Logged> = towns.iter().map(|p| town_url(store, &p.ns).map(Logged::new)).collect::<Result<_>>()?;
    let limit = Instant::now() + Duration::from_secs(120);
    while logged[0].count().unwrap_or(0) < after {
        if Instant::now() > limit {
            bail!("town {}: its store never held {after} events to restart the store after", towns[0].ns.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    pg.restart().context("cannot restart the district's PostgreSQL")?;
    let restarted = t0.elapsed();
    let before: Vec<Option<u64>> = logged.iter_mut().map(Logged::count).collect();
    let mut out = vec![None; towns.len()];
    while out.iter().any(Option::is_none) {
        for (i, l) in logged.iter_mut().enumerate() {
            if out[i].is_none() && l.count().zip(before[i]).is_some_and(|(n, b)| n > b) {
                out[i] = Some(t0.elapsed().as_secs_f64());
            }
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let stuck: Vec<&str> = towns.iter().zip(&out).filter(|(_, o)| o.is_none()).map(|(p, _)| p.ns.id()).collect();
            bail!("120 s after the store's restart (which took {:.1} s), no new event logged for {}", restarted.as_secs_f64(), stuck.join(", "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(out.into_iter().flatten().collect())
}

/// Waits until the town's store holds at least `qos1` events of a QoS 1 type and has stopped growing for a
/// second; returns how many events it holds.
fn drained(url: &Url, qos1: u64, limit: Duration) -> Result<u64> {
    let t0 = Instant::now();
    let (mut last, mut since) = (u64::MAX, Instant::now());
    let mut logged = Logged::new(url.clone());
    loop {
        let n = logged.count().unwrap_or(0);
        if n != last {
            (last, since) = (n, Instant::now());
        } else if n >= qos1 && since.elapsed() > Duration::from_secs(1) {
            // Telemetry counts in `n`: the QoS 1 events themselves must all be there.
            let q = logged.qos1().unwrap_or(0);
            if q >= qos1 {
                return Ok(n);
            }
            if t0.elapsed() > limit {
                bail!("its store holds {q} QoS 1 events, fewer than the {qos1} its twin published, {limit:?} after its twin ended");
            }
        }
        if t0.elapsed() > limit {
            bail!("its store holds {n} events, fewer than the {qos1} QoS 1 events its twin published, {limit:?} after its twin ended");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many of a store's events are of a QoS 1 type.
fn qos1_of(r: &towntwin_core::store::postgres::Reader) -> Result<u64> {
    Ok(r.count_by_type()?.iter().filter(|(t, _)| towntwin_core::event::EventType::parse(t).is_some_and(|t| t.qos() == 1)).map(|(_, n)| n).sum())
}

/// BLAKE3 of each order's rule, key and creation time, in order.
fn orders_digest<'a>(orders: impl Iterator<Item = &'a towntwin_core::orders::Order>) -> String {
    let mut h = blake3::Hasher::new();
    for o in orders {
        h.update(format!("{}\t{}\t{}\n", o.rule, o.key, o.created_at).as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The database, as shown (no password, no schema: every town has its own).
fn database(url: &Url) -> String {
    let s = url.to_string();
    s.split_once("?schema=").map_or(s.clone(), |(b, _)| b.to_string())
}

/// The outcome as a table.
pub fn render(o: &Outcome) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "district {} ({} towns) in {:.1} s: broker {}, store {}", o.district, o.towns.len(), o.wall_seconds, o.broker, o.store);
    let _ = writeln!(
        s,
        "{:<12} {:<22} {:>7} {:>8} {:>10} {:>12} {:>10} {:>8} {:>6}  takeover",
        "town", "topics", "estates", "devices", "QoS 1 sent", "QoS 1 logged", "logged", "orders", "open"
    );
    for t in &o.towns {
        let _ = writeln!(
            s,
            "{:<12} {:<22} {:>7} {:>8} {:>10} {:>12} {:>10} {:>8} {:>6}  {}",
            t.id,
            t.topic_root,
            t.estates,
            t.devices,
            t.published_qos1,
            t.qos1_logged,
            t.events_logged,
            t.orders,
            t.open_orders,
            match (t.takeover_seconds, t.standby_took_over) {
                (Some(s), _) => format!("{s:.2} s"),
                (None, true) => "standby".into(),
                (None, false) => "-".into(),
            }
        );
        if let Some(r) = t.store_recovery_seconds {
            s.pop();
            let _ = writeln!(s, "  (logging again {r:.2} s after the store's restart began)");
        }
        if let Some(r) = t.node_kill_recovery_seconds {
            s.pop();
            let _ = writeln!(s, "  (logging again {r:.2} s after the node's death)");
        }
    }
    if let Some(k) = &o.killed_node {
        let _ = writeln!(
            s,
            "broker node {} killed at {} events logged{}; QoS 0 events lost: {}",
            k.node,
            k.at_events,
            if k.led_message_stream { " (it led the QoS 1 message stream)" } else { "" },
            o.towns.iter().map(|t| format!("{} {}", t.id, t.qos0_missing)).collect::<Vec<_>>().join(", ")
        );
    }
    // A core that ends with events held has not applied them: its orders are short of them.
    for t in o.towns.iter().filter(|t| t.core_events_held.is_some_and(|n| n > 0) || t.core_minutes_forced.is_some_and(|n| n > 0)) {
        let _ = writeln!(
            s,
            "{}: its core holds {} events of minutes not yet whole (not applied), and applied {} minutes before they were whole",
            t.id,
            t.core_events_held.unwrap_or(0),
            t.core_minutes_forced.unwrap_or(0)
        );
    }
    s
}
