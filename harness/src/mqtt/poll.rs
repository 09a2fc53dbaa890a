//! Each connection's event loop: polling it, counting acknowledgements and errors, reconnecting, and
//! resubscribing after a broker restart.

use super::*;

pub(super) fn qos(q: u8) -> QoS {
    if q == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce }
}

/// A client's options (see [`crate::transport::options`]); `persistent`: the broker keeps its session
/// across a reconnect (per-device connections, as devices have).
pub(super) fn options(id: &str, user: &str, ep: &Endpoint, inflight: u16, capacity: usize, persistent: bool) -> Result<MqttOptions> {
    crate::transport::options(
        ep,
        id,
        user,
        crate::transport::Client { keep_alive: Duration::from_secs(60), inflight: Some(inflight), capacity: Some(capacity), persistent },
    )
}

/// The options `make` gives for each other node of `ep`'s cluster, in the order a client fails over to
/// them after `ep`'s own (empty for one broker).
pub(super) fn failover(ep: &Endpoint, make: impl Fn(&Endpoint) -> Result<MqttOptions>) -> Result<std::collections::VecDeque<MqttOptions>> {
    (1..=ep.others.len()).map(|j| make(&ep.starting_at(j))).collect()
}

fn is_qos1(r: &rumqttc::Request) -> bool {
    matches!(r, rumqttc::Request::Publish(p) if p.qos != QoS::AtMostOnce)
}

/// How many of `requests`, from the front, hold `window` QoS 1 publishes (and the other requests among
/// and before them): what may be handed back to rumqttc at once.
pub(super) fn window_end(requests: &std::collections::VecDeque<rumqttc::Request>, window: usize) -> usize {
    let mut qos1 = 0;
    for (i, r) in requests.iter().enumerate() {
        if is_qos1(r) {
            if qos1 == window {
                return i;
            }
            qos1 += 1;
        }
    }
    requests.len()
}

/// QoS 1 publishes among requests.
pub(super) fn qos1_in(requests: &std::collections::VecDeque<rumqttc::Request>) -> u64 {
    requests.iter().filter(|r| is_qos1(r)).count() as u64
}

/// An event loop's task, and the flag that tells it a disconnect is on purpose.
pub(super) struct Polled {
    pub(super) task: JoinHandle<()>,
    closing: Arc<AtomicBool>,
}

impl Polled {
    /// Disconnects `client` and waits (briefly) for the loop to see it out, so the DISCONNECT is sent.
    pub(super) async fn close(self, client: &AsyncClient) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = client.try_disconnect();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_millis(500), &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// Polls an event loop until it is closed, counting connections, acks and errors; optionally counting
/// and checking received publishes.
/// With `resubscribe`, a subscriber's client and filter: after a reconnect to a broker that kept no
/// session for it (a restarted broker), the filter is subscribed again. `platform`: the platform's own
/// services (the clock, the hotline, observers) retry every 300 ms; devices back off as firmware does.
pub(super) fn spawn_loop(
    mut el: EventLoop,
    counters: Arc<Counters>,
    validate: Option<bool>,
    resubscribe: Option<(AsyncClient, String)>,
    platform: bool,
    mut failover: std::collections::VecDeque<MqttOptions>,
) -> Polled {
    crate::transport::tune(&mut el, 30);
    let closing = Arc::new(AtomicBool::new(false));
    let closed = closing.clone();
    // Back-off between reconnects as device firmware does it: a random delay in [d/2, d], d doubling from
    // 1 s to 5 s while the broker stays away, drawn from a stream seeded by the client id (so a run's
    // reconnects are the same each time it is repeated). The core retries every 100 ms, the platform's
    // services every 300 ms, so that (most often) after a broker restart the core has subscribed again and the
    // clock ticks before the devices return: a broker that kept no session drops what arrives for a
    // subscription not yet made, and a clock minutes behind the devices (at a run's speed-up) makes the core
    // refuse their events as ahead of its window.
    let mut rng = {
        use rand::SeedableRng as _;
        let id = el.mqtt_options.client_id();
        rand::rngs::StdRng::seed_from_u64(u64::from_le_bytes(blake3::hash(id.as_bytes()).as_bytes()[..8].try_into().unwrap_or_default()))
    };
    let task = tokio::spawn(async move {
        let mut up = false;
        let first = Duration::from_millis(if platform { 300 } else { 1_000 });
        let mut backoff = first;
        // What the client had not yet had acknowledged when its connection broke: rumqttc moves it into
        // `pending` and, if the next CONNACK says the broker kept no session (a restarted broker, a clean
        // session), clears it: the in-flight publishes and every request still queued in its channel would
        // be lost without a word. Taken out here and put back after the CONNACK, it is sent again either way
        // (at least once: the core drops what it already has by source and id).
        let mut carried: std::collections::VecDeque<rumqttc::Request> = std::collections::VecDeque::new();
        // rumqttc sends its `pending` list without regard to its in-flight window, and a packet id that is
        // still in use goes to a single collision slot (a second one overwrites it): so no more than the
        // window is handed back at once, and the rest follows one for each acknowledgement.
        let mut overflow: std::collections::VecDeque<rumqttc::Request> = std::collections::VecDeque::new();
        let window = el.mqtt_options.inflight() as usize;
        let mut outstanding = 0u64;
        loop {
            let polled = el.poll().await;
            let now_outstanding = el.state.inflight() as u64 + qos1_in(&el.pending) + qos1_in(&carried) + qos1_in(&overflow);
            if now_outstanding != outstanding {
                if now_outstanding > outstanding {
                    counters.outstanding.fetch_add(now_outstanding - outstanding, Ordering::Relaxed);
                } else {
                    counters.outstanding.fetch_sub(outstanding - now_outstanding, Ordering::Relaxed);
                }
                outstanding = now_outstanding;
            }
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    tracing::debug!(
                        client = el.mqtt_options.client_id(),
                        session_present = c.session_present,
                        carried = carried.len(),
                        overflow = overflow.len(),
                        "connack"
                    );
                    if c.session_present {
                        counters.resumed.fetch_add(1, Ordering::Relaxed);
                    }
                    if !carried.is_empty() || !overflow.is_empty() {
                        counters.resent.fetch_add((carried.len() + overflow.len()) as u64, Ordering::Relaxed);
                        counters.resent_qos1.fetch_add(qos1_in(&carried) + qos1_in(&overflow), Ordering::Relaxed);
                        tracing::info!("sending {} requests again after a reconnect (session kept: {})", carried.len(), c.session_present);
                        carried.extend(std::mem::take(&mut el.pending));
                        carried.extend(std::mem::take(&mut overflow));
                        for r in carried.iter_mut() {
                            // Fresh packet ids, given in order, for a new session and a resumed one alike. On a
                            // resumed session the old ids would be the right ones for MQTT, but rumqttc hands
                            // out the same small range (1 to the in-flight window) to new publishes meanwhile,
                            // so an old id still waiting here collides with a new one in flight, and rumqttc
                            // keeps one collision at a time (a second overwrites the first: a QoS 1 publish
                            // lost, seen in reconnect storms of 9,751 device connections). A fresh id makes
                            // the broker take it as a new publish: at worst delivered twice, which the core's
                            // dedup drops.
                            if let rumqttc::Request::Publish(p) = r {
                                p.pkid = 0;
                            }
                        }
                        let rest = carried.split_off(window_end(&carried, window));
                        el.pending = std::mem::take(&mut carried);
                        overflow = rest;
                    }
                    if !up {
                        up = true;
                        counters.live.fetch_add(1, Ordering::Relaxed);
                    }
                    backoff = first;
                    // The first connection's subscription is made by whoever started this loop.
                    let again = Counters::get(&counters.connected) > 0;
                    if again
                        && !c.session_present
                        && let Some((client, filter)) = &resubscribe
                        && let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce)
                    {
                        tracing::warn!("cannot subscribe to {filter} again after a reconnect: {e}");
                    }
                    counters.bump(&counters.connected);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => counters.bump(&counters.subscribed),
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    tracing::debug!(client = el.mqtt_options.client_id(), pkid = a.pkid, "puback");
                    // One QoS 1 publish for the one acknowledged, and the QoS 0 ones before it (which take no
                    // acknowledgement, so they must not take a turn of the window).
                    while let Some(r) = overflow.pop_front() {
                        let qos1 = is_qos1(&r);
                        el.pending.push_back(r);
                        if qos1 {
                            break;
                        }
                    }
                    counters.bump(&counters.pubacks)
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) if closed.load(Ordering::Relaxed) => break,
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) if pkid != 0 => {
                    tracing::debug!(client = el.mqtt_options.client_id(), pkid, "publish qos1");
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::AwaitAck(pkid))) => {
                    tracing::debug!(client = el.mqtt_options.client_id(), pkid, "collision");
                    counters.collisions.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(check) = validate {
                        let ty = p.topic.rsplit('/').next().and_then(EventType::parse);
                        if let Some(ty) = ty {
                            counters.received_by_type[ty as usize].fetch_add(1, Ordering::Relaxed);
                        }
                        if check && (ty.is_none() || crate::cloudevents::check(&p.payload).is_err()) {
                            counters.invalid.fetch_add(1, Ordering::Relaxed);
                        }
                        counters.bump(&counters.received);
                    }
                }
                Ok(_) => {}
                Err(_) if closed.load(Ordering::Relaxed) => break,
                Err(e) => {
                    tracing::debug!(client = el.mqtt_options.client_id(), error = %e, pending = el.pending.len(), pending_qos1 = qos1_in(&el.pending), collision = el.state.collision.is_some(), "connection error");
                    if let rumqttc::ConnectionError::ConnectionRefused(code) = e {
                        tracing::warn!("the broker refused a connection: {code:?}");
                        counters.bump(&counters.refused);
                    }
                    carried.extend(std::mem::take(&mut el.pending));
                    if std::mem::take(&mut up) {
                        counters.live.fetch_sub(1, Ordering::Relaxed);
                        counters.drops.fetch_add(1, Ordering::Relaxed);
                    }
                    counters.bump(&counters.errors);
                    // A cluster's next node, in turn: the session (and what it holds) is the cluster's. A
                    // node that comes back is reached again when the turn comes round to it.
                    if let Some(next) = failover.pop_front() {
                        failover.push_back(std::mem::replace(&mut el.mqtt_options, next));
                        tracing::debug!(client = el.mqtt_options.client_id(), to = ?el.mqtt_options.broker_address(), "failing over");
                    }
                    // Back-off before the event loop reconnects, so a broker that is down is not hammered:
                    // jittered, growing while it stays away, or spread over a storm's window.
                    let storm = Counters::get(&counters.storm_ms);
                    let wait = if storm > 0 && !platform {
                        Duration::from_millis(rand::Rng::random_range(&mut rng, 0..=storm))
                    } else if platform {
                        first
                    } else {
                        let w = backoff.mul_f64(rand::Rng::random_range(&mut rng, 0.5..=1.0));
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        w
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
    });
    Polled { task, closing }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(q: u8) -> rumqttc::Request {
        rumqttc::Request::Publish(rumqttc::Publish::new("t", qos(q), vec![]))
    }

    /// A window of QoS 1 publishes, with the QoS 0 ones among them: a reconnect that carried 21,000 requests
    /// (two thirds QoS 1) once handed back the first thousand requests and then one for each acknowledgement,
    /// and each QoS 0 one sent took a turn that no acknowledgement gave back, until nothing more was sent.
    #[test]
    fn the_window_counts_qos1_publishes_only() {
        let reqs: std::collections::VecDeque<_> = [0, 1, 0, 0, 1, 1, 0, 1].into_iter().map(publish).collect();
        assert_eq!(window_end(&reqs, 2), 5, "two QoS 1 and the QoS 0 before and between them");
        assert_eq!(window_end(&reqs, 3), 7);
        assert_eq!(window_end(&reqs, 4), 8);
        assert_eq!(window_end(&reqs, 10), 8);
    }
}
