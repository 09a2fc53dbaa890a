//! Brokers: the embedded in-process rumqttd, and the address of an external one (`--broker mqtt://host:port`).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Where clients connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// True when this process started the broker.
    pub embedded: bool,
    /// Logins for the broker's users (`towntwin town credentials`); None: connect anonymously.
    pub credentials: Option<std::sync::Arc<crate::credentials::Credentials>>,
    /// The other nodes of a broker cluster (`mqtt://a,b,c`), in the order a client fails over to them
    /// after `host:port`; empty for one broker.
    pub others: Vec<(String, u16)>,
}

impl Endpoint {
    /// Connects as `user` when this endpoint has credentials.
    pub fn login_as(&self, o: &mut rumqttc::MqttOptions, user: &str) -> anyhow::Result<()> {
        if let Some(c) = &self.credentials {
            let (u, p) = c.login(user).ok_or_else(|| anyhow::anyhow!("the credentials file has no user `{user}`"))?;
            o.set_credentials(u, p);
        }
        Ok(())
    }

    /// The login of `user`, if this endpoint has credentials (for clients built elsewhere, like the core's).
    pub fn login(&self, user: &str) -> anyhow::Result<Option<(String, String)>> {
        match &self.credentials {
            Some(c) => c.login(user).map(Some).ok_or_else(|| anyhow::anyhow!("the credentials file has no user `{user}`")),
            None => Ok(None),
        }
    }

    /// Every node, this endpoint's own first.
    pub fn nodes(&self) -> Vec<(String, u16)> {
        std::iter::once((self.host.clone(), self.port)).chain(self.others.iter().cloned()).collect()
    }

    /// The same cluster, starting at node `i` (modulo the number of nodes) and failing over to the next ones
    /// in turn: how a district spreads its towns' clients over the nodes.
    pub fn starting_at(&self, i: usize) -> Endpoint {
        let mut nodes = self.nodes();
        let k = i % nodes.len();
        nodes.rotate_left(k);
        let (host, port) = nodes.remove(0);
        Endpoint { host, port, others: nodes, ..self.clone() }
    }

    /// The same endpoint, connecting with these credentials.
    pub fn with_credentials(mut self, c: crate::credentials::Credentials) -> Endpoint {
        self.credentials = Some(std::sync::Arc::new(c));
        self
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mqtt://{}:{}", self.host, self.port)?;
        for (h, p) in &self.others {
            write!(f, ",{h}:{p}")?;
        }
        f.write_str(if self.embedded { " (embedded rumqttd)" } else { "" })
    }
}

/// Parses `mqtt://host:port` (or `host:port`; port 1883 when left out).
pub fn parse_url(url: &str) -> Result<Endpoint> {
    let rest = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")).unwrap_or(url);
    if rest.is_empty() || rest.contains('/') {
        bail!("`{url}` is not a broker address: expected mqtt://host:port");
    }
    if rest.contains(',') {
        bail!("`{url}` names several broker nodes where one is expected: mqtt://host:port");
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().with_context(|| format!("`{p}` in `{url}` is not a port number"))?),
        None => (rest, 1883),
    };
    Ok(Endpoint { host: host.to_string(), port, embedded: false, credentials: None, others: Vec::new() })
}

/// Parses one broker's URL or a cluster's nodes (`mqtt://a:1883,b:1883`), without reaching them.
pub fn parse_nodes(url: &str) -> Result<Vec<Endpoint>> {
    let rest = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")).unwrap_or(url);
    rest.split(',').map(|n| parse_url(n.trim())).collect::<Result<Vec<_>>>().with_context(|| format!("`{url}`: expected mqtt://host:port[,host:port...]"))
}

/// The nodes of a broker cluster, `mqtt://host:port,host:port,...` (one node: [`parse_url`]'s form), once
/// one of them accepts connections (within 3 s); in the order given.
pub fn reach_cluster(url: &str) -> Result<Vec<Endpoint>> {
    let nodes = parse_nodes(url)?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = None;
    while Instant::now() < deadline {
        for n in &nodes {
            match check_reachable(n, Duration::from_millis(200)) {
                Ok(()) => return Ok(nodes),
                Err(e) => last = Some(e),
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("`{url}`: no broker node")))
}

/// The external broker at `url`, once it accepts connections (within 3 s). A cluster's nodes
/// (`mqtt://a:1883,b:1883`) make one endpoint that connects to the first and fails over to the others.
pub fn reach(url: &str) -> Result<Endpoint> {
    if url.contains(',') {
        let mut nodes = reach_cluster(url)?.into_iter();
        let first = nodes.next().ok_or_else(|| anyhow::anyhow!("`{url}`: no broker node"))?;
        return Ok(Endpoint { others: nodes.map(|n| (n.host, n.port)).collect(), ..first });
    }
    let ep = parse_url(url)?;
    check_reachable(&ep, Duration::from_secs(3))?;
    Ok(ep)
}

/// Checks that a broker accepts TCP connections at `ep`, within `timeout`.
pub fn check_reachable(ep: &Endpoint, timeout: Duration) -> Result<()> {
    let addrs: Vec<SocketAddr> = (ep.host.as_str(), ep.port).to_socket_addrs().with_context(|| format!("cannot resolve broker host `{}`", ep.host))?.collect();
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        for a in &addrs {
            match TcpStream::connect_timeout(a, Duration::from_millis(500)) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        // Back-off between connection attempts: an external broker (or rumqttd, which binds in its own
        // thread and gives no readiness signal) is polled until it accepts or the timeout passes.
        std::thread::sleep(Duration::from_millis(50));
    }
    match last {
        Some(e) => bail!("cannot reach the MQTT broker at {ep}: {e}"),
        None => bail!("cannot reach the MQTT broker at {ep}: no address"),
    }
}

/// How much of the stream the embedded broker keeps per subscription filter, by default: rumqttd appends
/// every message to the in-memory log of each filter it matches and drops a log's oldest segment (of
/// [`LOG_SEGMENTS`]) only when the log is full, whether or not its subscribers have read it: this is the
/// broker's memory, not a queue. 320 MiB (of topics and payloads; about twice that resident, measured) holds
/// about 800,000 of the twin's events, most of a town day at full speed; a subscriber further behind than
/// that (a core killed for longer) loses the oldest. At 1 GiB a 7-day run over it peaked at 2.1 GB.
pub const LOG_BYTES: usize = 320 * 1024 * 1024;
/// Segments of a filter's log; see [`LOG_BYTES`].
pub const LOG_SEGMENTS: usize = 10;

/// The embedded broker's settings: no accept delay, room for 30,000 connections, 1 MiB payloads, a log of
/// `log_bytes` per subscription filter (see [`LOG_BYTES`]).
pub fn embedded_config(listen: SocketAddr, log_bytes: usize) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: towntwin_core::limits::BROKER_MAX_PAYLOAD,
        max_inflight_count: 1_000,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings { name: "v4-embedded".into(), listen, tls: None, next_connection_delay_ms: 0, connections };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 30_010,
            max_outgoing_packet_count: 200,
            // rumqttd refuses segments under 1 KiB.
            max_segment_size: (log_bytes / LOG_SEGMENTS).max(1024),
            max_segment_count: LOG_SEGMENTS,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

/// Starts rumqttd in its own threads on a free loopback port and waits until it accepts connections. The
/// broker lives as long as the process.
pub fn start_embedded() -> Result<Endpoint> {
    start_embedded_on(0)
}

/// [`start_embedded`] on loopback port `port` (0: a free one), so that a broker restarted by `towntwin load`
/// comes back where its clients left it.
///
/// rumqttd is patched (`harness/vendor/rumqttd/PATCHES.md`): a listen backlog of 4,096, no sleep between
/// accepts, and TCP_NODELAY on the sockets it accepts. Without the last, its small packets (the last message
/// of a burst, a watermark) waited for the acknowledgement of the one before, and a client with nothing to
/// answer acknowledges only on Linux's 40 ms delayed-ACK timer: request-reply traffic (the core's acks after
/// commit, the lockstep with the responders) stalled 40 ms a round. A relay in front of rumqttd used to fix
/// that, at two more sockets per client, which 9,750 device connections could not afford.
pub fn start_embedded_on(port: u16) -> Result<Endpoint> {
    start_embedded_with(port, LOG_BYTES)
}

/// [`start_embedded_on`] keeping `log_bytes` of the stream per subscription filter (see [`LOG_BYTES`]).
pub fn start_embedded_with(port: u16, log_bytes: usize) -> Result<Endpoint> {
    let port = match port {
        // Ask the OS for a free port, then hand it to rumqttd (which binds by address, not by listener).
        0 => TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).context("cannot find a free loopback port")?.port(),
        p => p,
    };
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut broker = Broker::new(embedded_config(listen, log_bytes));
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })
        .context("cannot start the embedded broker thread")?;
    let ep = Endpoint { host: "127.0.0.1".into(), port, embedded: true, credentials: None, others: Vec::new() };
    check_reachable(&ep, Duration::from_secs(10)).context("the embedded broker did not start")?;
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        assert_eq!(
            parse_url("mqtt://localhost:1884").unwrap(),
            Endpoint { host: "localhost".into(), port: 1884, embedded: false, credentials: None, others: vec![] }
        );
        assert_eq!(parse_url("127.0.0.1").unwrap().port, 1883);
        assert!(parse_url("mqtt://h:notaport").is_err());
        assert!(parse_url("http://h:1/x").is_err());
        assert!(parse_url("a:1,b:2").is_err(), "a list of nodes is reach's to take apart");
    }

    #[test]
    fn a_cluster_endpoint_starts_at_any_node_and_keeps_the_others_in_turn() {
        let ep = Endpoint { others: vec![("b".into(), 2), ("c".into(), 3)], ..parse_url("a:1").unwrap() };
        assert_eq!(ep.to_string(), "mqtt://a:1,b:2,c:3");
        let s = ep.starting_at(4);
        assert_eq!((s.host.as_str(), s.port), ("b", 2));
        assert_eq!(s.others, vec![("c".to_string(), 3), ("a".to_string(), 1)]);
        assert_eq!(ep.starting_at(0), ep);
    }
}
