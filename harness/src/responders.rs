//! The twin's responders against a core that runs as a service: their actions go to the core's HTTP API, and
//! their dispatches come back as the core's notices on `orders/#`. The run keeps the twin and the core in
//! lockstep, one simulated minute at a time: after publishing a minute (whose last message is the clock tick
//! closing it), the harness waits for the core's watermark for that tick, by which time every notice the
//! minute caused has arrived on the same ordered subscription. So the responders see exactly what they would
//! see with the core in-process, and the two modes produce the same work orders and histories.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use towntwin_core::orders::{Notice, WATERMARK_TOPIC};
use towntwin_core::service::Core;
use towntwin_core::time::{Millis, rfc3339};
use towntwin_sim::plugins::responders::{Act, ResponderStats};

use crate::broker::Endpoint;

/// What the responders did to the core, beside the twin's own counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResponderReport {
    /// How the actions reached the core: `http` or `in-process`.
    pub via: String,
    pub actions_applied: u64,
    /// Actions the core refused (an order that moved on in the meantime): 409 over HTTP.
    pub actions_refused: u64,
    pub stats: ResponderStats,
}

enum FromCore {
    Notice(Box<Notice>),
    Watermark(Millis),
}

/// A subscription to `orders/#`: the core's notices and watermarks, in the order the core published them.
pub struct OrdersWatch {
    client: AsyncClient,
    task: JoinHandle<()>,
    rx: mpsc::UnboundedReceiver<Result<FromCore, String>>,
}

impl OrdersWatch {
    pub async fn start(ep: &Endpoint) -> Result<OrdersWatch> {
        let mut o = MqttOptions::new(format!("towntwin-responders-{}", std::process::id()), ep.host.clone(), ep.port);
        ep.login_as(&mut o, crate::credentials::OBSERVER)?;
        o.set_keep_alive(Duration::from_secs(60))
            .set_max_packet_size(towntwin_core::limits::CLIENT_MAX_PACKET, towntwin_core::limits::CLIENT_MAX_PACKET)
            .set_clean_session(true);
        let (client, mut el) = AsyncClient::new(o, 1_000);
        // Acknowledgements go out at once: the core's watermark must not wait behind Nagle's algorithm.
        let mut n = rumqttc::NetworkOptions::new();
        n.set_tcp_nodelay(true);
        el.set_network_options(n);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let msg = if p.topic == WATERMARK_TOPIC {
                            towntwin_core::orders::parse_watermark(&p.payload)
                                .map(FromCore::Watermark)
                                .ok_or_else(|| format!("bad watermark {:?}", String::from_utf8_lossy(&p.payload)))
                        } else {
                            serde_json::from_slice::<Notice>(&p.payload)
                                .map(|n| FromCore::Notice(Box::new(n)))
                                .map_err(|e| format!("bad notice on {}: {e}", p.topic))
                        };
                        if tx.send(msg).is_err() {
                            break;
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(format!("orders subscription: {e}")));
                        break;
                    }
                }
            }
        });
        client.subscribe("orders/#", QoS::AtLeastOnce).await?;
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .map_err(|_| anyhow!("no SUBACK for orders/# from {ep} within 10 s"))?
            .map_err(|_| anyhow!("the orders subscription to {ep} ended before its SUBACK"))?;
        Ok(OrdersWatch { client, task, rx })
    }

    /// The notices published until the core's watermark reaches `tick` (the minute's closing clock tick).
    pub async fn until(&mut self, tick: Millis, limit: Duration) -> Result<Vec<Notice>> {
        let mut out = Vec::new();
        loop {
            let got = tokio::time::timeout(limit, self.rx.recv())
                .await
                .map_err(|_| anyhow!("the core did not report event time {} within {} s", rfc3339(tick), limit.as_secs()))?;
            match got {
                Some(Ok(FromCore::Notice(n))) => out.push(*n),
                Some(Ok(FromCore::Watermark(now))) if now >= tick => return Ok(out),
                Some(Ok(FromCore::Watermark(_))) => {}
                Some(Err(e)) => bail!("{e}"),
                None => bail!("the orders subscription ended"),
            }
        }
    }

    /// Disconnects, and waits (briefly) for the subscription's loop to see the DISCONNECT out.
    pub async fn close(self) {
        let _ = self.client.try_disconnect();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_millis(500), &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Applies responders' actions through the core's HTTP API, one request each, in order, each responder with
/// its own token. Tokens are issued as an operator issues them (`towntwin core token issue`): through the
/// core, the first time a principal acts.
pub struct HttpActor {
    client: reqwest::Client,
    base: String,
    core: Arc<Mutex<Core>>,
    tokens: HashMap<String, String>,
    pub applied: u64,
    pub refused: u64,
}

impl HttpActor {
    pub fn new(addr: SocketAddr, core: Arc<Mutex<Core>>) -> Result<HttpActor> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().context("cannot build the HTTP client")?;
        Ok(HttpActor { client, base: format!("http://{addr}"), core, tokens: HashMap::new(), applied: 0, refused: 0 })
    }

    fn token(&mut self, principal: &towntwin_core::principal::Principal) -> Result<String> {
        let key = principal.to_string();
        if let Some(t) = self.tokens.get(&key) {
            return Ok(t.clone());
        }
        let token = self
            .core
            .lock()
            .map_err(|_| anyhow!("the core's lock is poisoned"))?
            .issue_token(principal)
            .with_context(|| format!("cannot issue a token for {key}"))?;
        self.tokens.insert(key, token.clone());
        Ok(token)
    }

    pub async fn apply(&mut self, acts: Vec<Act>) -> Result<()> {
        for a in acts {
            let url = format!("{}/orders/{}/actions", self.base, a.order);
            let token = self.token(&a.principal)?;
            let res = self.client.post(&url).bearer_auth(token).json(&a.action).send().await.with_context(|| format!("POST {url}"))?;
            match res.status().as_u16() {
                200 => self.applied += 1,
                // The order moved on (escalated by a deadline, say) since the notice the responder acted on.
                409 => self.refused += 1,
                s => {
                    let body = res.text().await.unwrap_or_default();
                    bail!("POST {url} as {} answered {s}: {body}", a.principal);
                }
            }
        }
        Ok(())
    }
}
