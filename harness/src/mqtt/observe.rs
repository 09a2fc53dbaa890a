//! A reconnect storm over a publisher's connections, and the observer that counts what the broker delivered.

use super::*;

/// A reconnect storm: every connection of a publisher is dropped at once and comes back after a random delay
/// within a window, resuming its session (the publishers' sessions are persistent), as a town's devices do
/// after their uplink flaps.
#[derive(Clone)]
pub struct Storm {
    /// The connections a storm drops.
    pub(super) clients: Vec<AsyncClient>,
    /// All the publisher's connections.
    pub(super) total: u64,
    pub(super) counters: Arc<Counters>,
}

impl Storm {
    /// A publisher without device connections to drop (one connection of its own: the lean publisher).
    pub fn none(counters: Arc<Counters>) -> Storm {
        Storm { clients: Vec::new(), total: 1, counters }
    }

    /// Drops every device connection (DISCONNECT; the broker keeps the sessions); each reconnects within
    /// `within`.
    pub fn start(&self, within: Duration) {
        self.counters.storm_ms.store(within.as_millis().max(1) as u64, Ordering::Relaxed);
        for c in &self.clients {
            let _ = c.try_disconnect();
        }
    }

    /// Waits until every connection is up again (at most `limit`); then back to the usual back-off.
    pub async fn wait_reconnected(&self, since_drops: u64, limit: Duration) -> bool {
        let (n, total) = (self.clients.len() as u64, self.total);
        let ok = self.counters.wait_until(Instant::now() + limit, |c| Counters::get(&c.drops) >= since_drops + n && Counters::get(&c.live) >= total).await;
        self.counters.storm_ms.store(0, Ordering::Relaxed);
        ok
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The connections a storm drops.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// All the publisher's connections.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// Subscribes to a filter and counts (and optionally validates) what arrives.
pub struct Observer {
    client: AsyncClient,
    task: Polled,
    pub counters: Arc<Counters>,
}

impl Observer {
    /// Connects and subscribes; returns once the broker has acknowledged the subscription (its SUBACK).
    pub async fn start(ep: &Endpoint, filter: &str, validate: bool) -> Result<Observer> {
        let counters = Counters::new();
        let id = format!("towntwin-observer-{}-{}", std::process::id(), filter.len());
        let make = |e: &Endpoint| options(&id, crate::credentials::OBSERVER, e, 1_000, 1_000, false);
        let (client, el) = AsyncClient::new(make(ep)?, 1_000);
        let task = spawn_loop(el, counters.clone(), Some(validate), Some((client.clone(), filter.to_string())), true, failover(ep, make)?);
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        if !counters.wait_until(Instant::now() + Duration::from_secs(10), |c| Counters::get(&c.subscribed) > 0 || Counters::get(&c.refused) > 0).await
            || Counters::get(&counters.refused) > 0
        {
            task.task.abort();
            if Counters::get(&counters.refused) > 0 {
                bail!("{ep} refused the observer's connection (not authorised: check --credentials)");
            }
            bail!("the observer's subscription to {filter} on {ep} was not acknowledged within 10 s");
        }
        Ok(Observer { client, task, counters })
    }

    pub fn received(&self) -> u64 {
        Counters::get(&self.counters.received)
    }

    /// Waits until `expected` messages arrived, or nothing arrived for `quiet`, or `limit`; returns the count.
    pub async fn wait_for(&self, expected: u64, quiet: Duration, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let before = self.received();
            let until = deadline.min(Instant::now() + quiet);
            let done = self.counters.wait_until(until, |c| Counters::get(&c.received) >= expected || Counters::get(&c.received) != before).await;
            let now = self.received();
            if now >= expected || !done || Instant::now() >= deadline {
                return now;
            }
        }
    }

    pub async fn close(self) {
        self.task.close(&self.client).await;
    }
}
