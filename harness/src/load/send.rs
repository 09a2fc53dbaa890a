//! Sending open loop: each event at its intended instant whether or not the system keeps up ([`drive`]),
//! through the load's publisher ([`Gen`]: rumqttc clients in any connection mode, or the lean client for
//! one connection).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use towntwin_sim::Message;

use super::lean;
use super::profile::{Fault, Profile, secs};
use super::slice::{Owner, Slice};
use crate::broker::Endpoint;
use crate::mqtt::Publisher;
use crate::percentiles::Recorder;

/// Sends item `i` at `t0 + offsets[i]` seconds, open loop: a send that blocks delays the ones after it
/// only until they can go, never their intended instants, which are fixed beforehand. Records each send's
/// lateness (actual minus intended, microseconds) in `lag`. Stops (with an error) once sending is `give_up`
/// behind schedule: the run is then invalid, and bounded in time.
pub async fn drive(offsets: &[f64], t0: Instant, sink: &mut impl Sink, lag: &mut Recorder, give_up: Duration) -> Result<()> {
    for (i, &w) in offsets.iter().enumerate() {
        let due = t0 + secs(w);
        if due > Instant::now() {
            sink.flush().await?;
            // Pacing to the schedule on the runner's clock: never early (a send may be up to a millisecond
            // late, which the lag histogram shows and the latency includes).
            crate::runner::pace::until(tokio::time::Instant::from_std(due)).await;
        }
        let late = Instant::now().saturating_duration_since(due);
        lag.record(late.as_micros() as i64);
        if late > give_up {
            anyhow::bail!("the generator fell {late:?} behind its schedule at event {i} of {}: stopped", offsets.len());
        }
        sink.send(i).await?;
    }
    sink.flush().await
}

/// Where [`drive`] sends item `i` (the publisher, or a test's stalling consumer).
pub trait Sink {
    fn send(&mut self, i: usize) -> impl std::future::Future<Output = Result<()>>;
    /// Called before the driver waits for the next item's instant: what was queued goes out now.
    fn flush(&mut self) -> impl std::future::Future<Output = Result<()>> {
        async { Ok(()) }
    }
}

/// The load's publisher: rumqttc clients in any connection mode, or the lean one for one connection.
pub(super) enum Gen {
    Clients(Publisher),
    Lean(lean::Lean),
}

impl Gen {
    /// The lean publisher when the profile has one connection and no fault that drops it.
    /// `slice`: one generator of several, which connects only its own devices (with a connection per
    /// device) and marks its client ids with its number.
    pub(super) async fn connect(ep: &Endpoint, prof: &Profile, town: &towntwin_core::town::Town, slice: Option<(Slice, &Owner)>) -> Result<Gen> {
        let drops = prof.faults.iter().any(|f| matches!(f, Fault::RestartBroker { .. } | Fault::ReconnectStorm { .. }));
        let timeout = Duration::from_secs(60);
        let tag = slice.map_or(String::new(), |(s, _)| format!("g{}of{}-", s.index, s.of));
        Ok(if prof.connections == crate::mqtt::Mode::One && !drops {
            Gen::Lean(lean::Lean::connect(ep, timeout, &tag).await?)
        } else {
            let keep = |key: &str| slice.is_none_or(|(s, owner)| owner.connects(s, key));
            Gen::Clients(Publisher::connect_some(ep, prof.connections, town, timeout, &tag, &keep).await?)
        })
    }

    pub(super) fn counters(&self) -> &Arc<crate::mqtt::Counters> {
        match self {
            Gen::Clients(p) => &p.counters,
            Gen::Lean(l) => &l.counters,
        }
    }

    pub(super) fn connections(&self) -> usize {
        match self {
            Gen::Clients(p) => p.connections(),
            Gen::Lean(_) => 1,
        }
    }

    pub(super) fn connect_time(&self) -> Duration {
        match self {
            Gen::Clients(p) => p.connect_time,
            Gen::Lean(l) => l.connect_time,
        }
    }

    pub(super) fn storm_handle(&self) -> crate::mqtt::Storm {
        match self {
            Gen::Clients(p) => p.storm_handle(),
            Gen::Lean(l) => crate::mqtt::Storm::none(l.counters.clone()),
        }
    }

    pub(super) fn published(&self) -> u64 {
        match self {
            Gen::Clients(p) => p.published,
            Gen::Lean(l) => l.published,
        }
    }

    pub(super) async fn flush(&mut self, timeout: Duration) -> u64 {
        match self {
            Gen::Clients(p) => p.flush(timeout).await,
            Gen::Lean(l) => {
                if let Err(e) = l.flush().await {
                    tracing::warn!("{e:#}");
                }
                l.wait_acked(timeout).await
            }
        }
    }

    pub(super) async fn close(self) {
        match self {
            Gen::Clients(p) => p.close().await,
            Gen::Lean(l) => l.close().await,
        }
    }
}

pub(super) struct ToBroker<'a> {
    pub publisher: &'a mut Gen,
    pub msgs: &'a [Message],
}

impl Sink for ToBroker<'_> {
    async fn send(&mut self, i: usize) -> Result<()> {
        match self.publisher {
            Gen::Clients(p) => p.publish(self.msgs[i].clone()).await,
            Gen::Lean(l) => l.send(&self.msgs[i]).await,
        }
    }

    async fn flush(&mut self) -> Result<()> {
        match self.publisher {
            Gen::Clients(_) => Ok(()),
            Gen::Lean(l) => l.flush().await,
        }
    }
}
