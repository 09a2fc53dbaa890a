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

    /// The same endpoint, connecting with these credentials.
    pub fn with_credentials(mut self, c: crate::credentials::Credentials) -> Endpoint {
        self.credentials = Some(std::sync::Arc::new(c));
        self
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mqtt://{}:{}{}", self.host, self.port, if self.embedded { " (embedded rumqttd)" } else { "" })
    }
}

/// Parses `mqtt://host:port` (or `host:port`; port 1883 when left out).
pub fn parse_url(url: &str) -> Result<Endpoint> {
    let rest = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("tcp://")).unwrap_or(url);
    if rest.is_empty() || rest.contains('/') {
        bail!("`{url}` is not a broker address: expected mqtt://host:port");
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().with_context(|| format!("`{p}` in `{url}` is not a port number"))?),
        None => (rest, 1883),
    };
    Ok(Endpoint { host: host.to_string(), port, embedded: false, credentials: None })
}

/// The external broker at `url`, once it accepts connections (within 3 s).
pub fn reach(url: &str) -> Result<Endpoint> {
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

/// The embedded broker's settings: no accept delay, room for 30,000 connections, 1 MiB payloads.
pub fn embedded_config(listen: SocketAddr) -> Config {
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
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

/// Starts rumqttd in its own threads on a free loopback port, behind a [`front`], and waits until it accepts
/// connections. The broker lives as long as the process.
pub fn start_embedded() -> Result<Endpoint> {
    start_embedded_on(0)
}

/// [`start_embedded`] with its front on loopback port `port` (0: a free one), so that a broker restarted by
/// `towntwin load` comes back where its clients left it.
pub fn start_embedded_on(front_port: u16) -> Result<Endpoint> {
    // Ask the OS for a free port, then hand it to rumqttd (which binds by address, not by listener).
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).context("cannot find a free loopback port")?.port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut broker = Broker::new(embedded_config(listen));
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })
        .context("cannot start the embedded broker thread")?;
    check_reachable(&Endpoint { host: "127.0.0.1".into(), port, embedded: true, credentials: None }, Duration::from_secs(10))
        .context("the embedded broker did not start")?;
    let ep = Endpoint { host: "127.0.0.1".into(), port: start_front(listen, front_port)?, embedded: true, credentials: None };
    check_reachable(&ep, Duration::from_secs(10)).context("the embedded broker's front did not start")?;
    Ok(ep)
}

/// Starts a [`front`] for the broker at `broker` on a free loopback port, in its own thread; returns the port.
fn start_front(broker: SocketAddr, port: u16) -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", port)).with_context(|| format!("cannot listen on loopback port {port}"))?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("broker-front".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!("broker front: {e}"),
            };
            rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => front(l, broker).await,
                    Err(e) => tracing::error!("broker front: {e}"),
                }
            });
        })
        .context("cannot start the broker front thread")?;
    Ok(port)
}

/// The embedded broker's front door: relays each client connection to rumqttd, with Nagle's algorithm off
/// on both of its sockets and delayed acknowledgements off towards the broker.
///
/// rumqttd leaves Nagle's algorithm on for the sockets it accepts, so a small packet it writes (the last
/// message of a burst, a watermark) waits for the acknowledgement of the one before, and a client that has
/// nothing to answer (a QoS 0 message) acknowledges only on Linux's 40 ms delayed-ACK timer. Request-reply
/// traffic (the core's acks after commit, the lockstep with the responders) then stalls 40 ms a round.
/// The front re-arms TCP_QUICKACK after every read from the broker, so rumqttd's packets never wait, and
/// sets TCP_NODELAY on both sides. Measured on the baseline day: the core over the broker in lockstep with
/// the responders went from 105 s to about 36 s (README has the figures).
pub async fn front(listener: tokio::net::TcpListener, broker: SocketAddr) {
    loop {
        let (client, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("broker front: accept: {e}");
                // Back-off: accept fails when descriptors run out; retrying at once would spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let upstream = match tokio::net::TcpStream::connect(broker).await {
                Ok(u) => u,
                Err(e) => return tracing::warn!("broker front: cannot reach the broker: {e}"),
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = upstream.into_split();
            let to_broker = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut uw).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut uw).await;
            });
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let n = match ur.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let _ = socket2::SockRef::from(ur.as_ref()).set_tcp_quickack(true);
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut cw).await;
            let _ = to_broker.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        assert_eq!(parse_url("mqtt://localhost:1884").unwrap(), Endpoint { host: "localhost".into(), port: 1884, embedded: false, credentials: None });
        assert_eq!(parse_url("127.0.0.1").unwrap().port, 1883);
        assert!(parse_url("mqtt://h:notaport").is_err());
        assert!(parse_url("http://h:1/x").is_err());
    }
}
