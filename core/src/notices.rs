//! What the core publishes: every work-order transition on `orders/{area}/{order id}/{action}` and the
//! watermark on `orders/watermark`, in the order the core committed them, on a connection of its own
//! (client id `<core's>-out`, a persistent session so that notices in flight survive a reconnect). Ingest
//! and the web side both publish through an [`OrdersOut`]; neither depends on the other.

use std::time::Duration;

use rumqttc::{AsyncClient, EventLoop, MqttOptions, NetworkOptions};

use crate::orders::{Notice, WATERMARK_TOPIC};
use crate::time::Millis;

/// The publishing connection: its own client id (the subscribing one has the core's), a persistent session
/// so that notices in flight survive a reconnect.
/// The publishing connection's options, to `cfg`'s broker.
pub(crate) fn mqtt_options(cfg: &crate::wire::Connect) -> MqttOptions {
    let mut o = MqttOptions::new(format!("{}-out", cfg.client_id), cfg.host.clone(), cfg.port);
    if let Some((user, password)) = &cfg.login {
        o.set_credentials(user, password);
    }
    o.set_keep_alive(Duration::from_secs(60))
        .set_clean_session(false)
        .set_max_packet_size(crate::limits::CLIENT_MAX_PACKET, crate::limits::CLIENT_MAX_PACKET)
        .set_inflight(1_000)
        .set_request_channel_capacity(50_000);
    o
}

fn options(cfg: &crate::wire::Connect) -> (AsyncClient, EventLoop) {
    let (client, mut el) = AsyncClient::new(mqtt_options(cfg), 50_000);
    let mut n = NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n.set_connection_timeout(30);
    el.set_network_options(n);
    (client, el)
}

/// Publishes work-order notices and the watermark on the core's own connection, so that everything the core
/// publishes reaches an `orders/#` subscriber in the order the core committed it. Cheap to clone; the API
/// holds one to publish the transitions its callers make.
#[derive(Clone)]
pub struct OrdersOut {
    /// To the task that publishes them in order, waiting for room on the connection: a burst of notices
    /// (an escalation storm) can neither be dropped nor crowd out the acknowledgements.
    tx: tokio::sync::mpsc::UnboundedSender<(String, Vec<u8>)>,
    /// The same notices for listeners in this process.
    feed: tokio::sync::broadcast::Sender<Notice>,
    /// The town's topic prefix (`""`, or `{town}/` for a named town of a district).
    prefix: std::sync::Arc<str>,
}

impl OrdersOut {
    /// Publishes each notice on `orders/{area}/{id}/{action}` (QoS 1); call it while still holding the core,
    /// so notices from the API and from ingest cannot overtake each other. A notice that cannot be encoded is
    /// not sent with an empty body: it is logged, and the rest go out.
    pub fn publish(&self, notices: &[Notice]) {
        for n in notices {
            let body = match serde_json::to_vec(n) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("work-order notice {} {} cannot be encoded, not published: {e}", n.event.order, n.event.action);
                    continue;
                }
            };
            if self.tx.send((format!("{}{}", self.prefix, n.topic()), body)).is_err() {
                tracing::warn!("the core's connection is closed: work-order notice {} {} not published", n.event.order, n.event.action);
            }
            // In-process listeners (tests, benchmarks) get the same notices; none listening is fine.
            let _ = self.feed.send(n.clone());
        }
    }

    /// Publishes `{"now": ms}` on [`WATERMARK_TOPIC`].
    pub fn watermark(&self, now: Millis) {
        if self.tx.send((format!("{}{WATERMARK_TOPIC}", self.prefix), crate::orders::watermark_body(now))).is_err() {
            tracing::warn!("the core's connection is closed: watermark not published");
        }
    }

    /// The notices as they are published, for listeners in this process (lagging ones lose the oldest).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.feed.subscribe()
    }
}

/// How many notices an in-process listener may fall behind before it loses the oldest.
const FEED_CAPACITY: usize = 1 << 16;

/// The core's MQTT connection, made but not yet served.
pub struct Link {
    pub(crate) client: AsyncClient,
    pub(crate) el: EventLoop,
    pub(crate) out: OrdersOut,
    pub(crate) out_rx: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Link {
    /// The publishing connection of the core that subscribes as `cfg`, publishing under `ns`'s topic root.
    pub fn new(cfg: &crate::wire::Connect, ns: &crate::event::Namespace) -> Link {
        let (client, el) = options(cfg);
        let (tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
        let (feed, _) = tokio::sync::broadcast::channel(FEED_CAPACITY);
        Link { client, el, out: OrdersOut { tx, feed, prefix: ns.prefix().into() }, out_rx }
    }

    /// A handle that publishes on this connection (for the API).
    pub fn orders_out(&self) -> OrdersOut {
        self.out.clone()
    }
}
