//! The harness's side of MQTT, in one place: how its clients are set up ([`options`], [`tune`]) and the
//! one subscription to the core's notices ([`OrdersFeed`]) that the lockstep run, the drill and the load
//! test all read.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use towntwin_core::orders::{Notice, WATERMARK_TOPIC};
use towntwin_core::time::Millis;

use crate::broker::Endpoint;

/// How a client of the harness talks to the broker.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub keep_alive: Duration,
    /// QoS 1 publishes in flight (rumqttc's default when `None`).
    pub inflight: Option<u16>,
    /// Requests queued towards the event loop (rumqttc's default when `None`).
    pub capacity: Option<usize>,
    /// The broker keeps the session across a reconnect (per-device connections, as devices have).
    pub persistent: bool,
}

impl Client {
    /// A subscriber or a light publisher with a clean session.
    pub const PLAIN: Client = Client { keep_alive: Duration::from_secs(60), inflight: None, capacity: None, persistent: false };
}

/// A client's options: the broker's address, `user`'s login where the endpoint has credentials, the
/// packet size limit every towntwin client shares, and `c`.
pub fn options(ep: &Endpoint, id: &str, user: &str, c: Client) -> Result<MqttOptions> {
    let mut o = MqttOptions::new(id, ep.host.clone(), ep.port);
    ep.login_as(&mut o, user)?;
    o.set_keep_alive(c.keep_alive)
        .set_max_packet_size(towntwin_core::limits::CLIENT_MAX_PACKET, towntwin_core::limits::CLIENT_MAX_PACKET)
        .set_clean_session(!c.persistent);
    if let Some(n) = c.inflight {
        o.set_inflight(n);
    }
    if let Some(n) = c.capacity {
        o.set_request_channel_capacity(n);
    }
    Ok(o)
}

/// Socket settings for an event loop: no Nagle (acknowledgements and the core's watermarks go out at
/// once), and how long a connect may take.
pub fn tune(el: &mut EventLoop, connect_timeout_s: u64) {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n.set_connection_timeout(connect_timeout_s);
    el.set_network_options(n);
}

/// What the core published on `orders/#`, in its order.
#[derive(Debug)]
pub enum Heard {
    Notice(Box<Notice>),
    /// The core has taken everything up to this event time.
    Watermark(Millis),
    /// A message on `orders/#` that is neither (named with the reason).
    Bad(String),
    /// The connection was lost (the event loop reconnects and subscribes again).
    Lost(String),
}

/// The subscription to the core's notices and watermarks, each stamped when it arrived. After a reconnect
/// to a broker that kept no session (a broker restart) it subscribes again.
pub struct OrdersFeed {
    client: AsyncClient,
    task: JoinHandle<()>,
    rx: mpsc::UnboundedReceiver<(Instant, Heard)>,
}

impl OrdersFeed {
    /// Subscribes as `name` (with this process's id) and returns once the broker has acknowledged it.
    pub async fn start(ep: &Endpoint, name: &str) -> Result<OrdersFeed> {
        OrdersFeed::start_for(ep, name, &towntwin_core::event::Namespace::default()).await
    }

    /// [`OrdersFeed::start`] for the town `ns` (its `orders/#` under the town's root).
    pub async fn start_for(ep: &Endpoint, name: &str, ns: &towntwin_core::event::Namespace) -> Result<OrdersFeed> {
        let (filter, watermark) = (ns.topic("orders/#"), ns.topic(WATERMARK_TOPIC));
        let o = options(ep, &format!("{name}-{}", std::process::id()), crate::credentials::OBSERVER, Client::PLAIN)?;
        let (client, mut el) = AsyncClient::new(o, 1_000);
        tune(&mut el, 30);
        client.subscribe(filter.as_str(), QoS::AtLeastOnce).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let again = client.clone();
        let task = tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            let mut connected = false;
            loop {
                let heard = match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if connected && let Err(e) = again.try_subscribe(filter.as_str(), QoS::AtLeastOnce) {
                            tracing::warn!("cannot subscribe to {filter} again: {e}");
                        }
                        connected = true;
                        continue;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                        continue;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == watermark => match towntwin_core::orders::parse_watermark(&p.payload) {
                        Some(w) => Heard::Watermark(w),
                        None => Heard::Bad(format!("bad watermark {:?}", String::from_utf8_lossy(&p.payload))),
                    },
                    Ok(Event::Incoming(Packet::Publish(p))) => match serde_json::from_slice::<Notice>(&p.payload) {
                        Ok(n) => Heard::Notice(Box::new(n)),
                        Err(e) => Heard::Bad(format!("bad notice on {}: {e}", p.topic)),
                    },
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => continue,
                    Err(e) => Heard::Lost(format!("orders subscription: {e}")),
                };
                let lost = matches!(heard, Heard::Lost(_));
                if tx.send((Instant::now(), heard)).is_err() {
                    break;
                }
                if lost {
                    // Back-off before the event loop reconnects (a broker restart).
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .map_err(|_| anyhow!("no SUBACK for orders/# from {ep} within 10 s"))?
            .map_err(|_| anyhow!("the orders subscription to {ep} ended before its SUBACK"))?;
        Ok(OrdersFeed { client, task, rx })
    }

    /// The next thing heard, with when it arrived; `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<(Instant, Heard)> {
        self.rx.recv().await
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
