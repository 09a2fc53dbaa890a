//! The core as the twin sees it. The runner drives one [`CoreLink`] a tick at a time, the same way whether
//! the core is a library in this process ([`InProcess`]: the events encoded, or typed as the twin has them
//! before encoding), a service that takes the stream from the broker and the responders' actions over
//! HTTP ([`OverNetwork`]), or absent ([`NoCore`]): the responders' actions of the last tick go in first,
//! then the tick's events, then the notices that the tick caused come back for the responders' next tick.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use towntwin_core::event::Event;
use towntwin_core::ingest::IngestConfig;
use towntwin_core::orders::Notice;
use towntwin_core::server::{self, CoreConfig, CoreHandle};
use towntwin_core::service::{Core, CoreError};
use towntwin_core::time::Millis;
use towntwin_sim::Act;
use towntwin_sim::Message;

use crate::broker::Endpoint;
use crate::responders::{HttpActor, OrdersWatch};

/// The core once a run is over: its state, and how the run reached it (for the summary).
pub struct CoreOutcome {
    pub core: Core,
    /// How the core took the stream: `mqtt` or `in-process`.
    pub mode: &'static str,
    /// How the responders' actions reached it: `http` or `in-process`.
    pub actions_via: &'static str,
    /// Responders' actions the core applied, and refused (an order that moved on meanwhile).
    pub applied: u64,
    pub refused: u64,
}

/// One interface to the core for the run loop.
pub(crate) trait CoreLink {
    /// The responders' actions from the tick that just ran; they reach the core before the tick's events.
    async fn act(&mut self, acts: Vec<Act>) -> Result<()>;
    /// The tick's events (encoded, or `typed` when the twin hands them over so), after the publisher (if
    /// any) has sent them.
    async fn events(&mut self, msgs: &[Message], typed: Vec<Event>) -> Result<()>;
    /// The notices the core published for everything up to event time `tick` (the tick's closing clock
    /// tick), for the responders' next tick.
    async fn notices(&mut self, tick: Option<Millis>) -> Result<Vec<Notice>>;
    /// Waits until the core has taken what was published (`published` messages, of which `qos1` may not
    /// be shed), stops it and returns its state; `None` without a core.
    async fn finish(self, published: u64, qos1: u64) -> Result<Option<CoreOutcome>>;
    /// Whether it takes the tick's events typed alongside the encoded ones (a core in this process).
    fn takes_typed(&self) -> bool {
        false
    }
}

/// No core: traffic only.
pub(crate) struct NoCore;

impl CoreLink for NoCore {
    async fn act(&mut self, _: Vec<Act>) -> Result<()> {
        Ok(())
    }
    async fn events(&mut self, _: &[Message], _: Vec<Event>) -> Result<()> {
        Ok(())
    }
    async fn notices(&mut self, _: Option<Millis>) -> Result<Vec<Notice>> {
        Ok(Vec::new())
    }
    async fn finish(self, _: u64, _: u64) -> Result<Option<CoreOutcome>> {
        Ok(None)
    }
}

/// The core library fed the twin's messages directly, in the twin's order.
pub(crate) struct InProcess {
    core: Core,
    applied: u64,
    refused: u64,
    /// Notices of the current tick, as the networked core would publish them.
    pending: Vec<Notice>,
}

/// An in-process core's store writes behind (on a thread of its own, while the core and the twin go on) and
/// commits every this many batches (a tick's events, a responder's action): the core acknowledges nothing
/// to anyone and the twin's ids never repeat, and the store's inserts and a commit a batch were over half of
/// `run --broker none`, on the thread the twin waits for each tick. A kill loses at most the batches not
/// yet committed, never part of one (the store stays a prefix of the run).
pub(crate) const GROUP_COMMITS: u32 = 128;

/// Events between an in-process core's engine snapshots. Snapshots are for a restart, which replays the
/// events after the last one; a core in the twin's process never restarts within its run, and takes a
/// last snapshot when the run ends (so a core opened on the store later replays nothing). At the core's
/// usual 100,000 they were a sixth of `run --broker none`'s CPU.
pub(crate) const SNAPSHOT_EVERY: u64 = 1_000_000;

impl InProcess {
    pub fn new(mut core: Core) -> Result<InProcess> {
        core.write_behind(GROUP_COMMITS).context("cannot start the store's writer")?;
        core.snapshot_every = SNAPSHOT_EVERY;
        Ok(InProcess { core, applied: 0, refused: 0, pending: Vec::new() })
    }
}

impl CoreLink for InProcess {
    async fn act(&mut self, acts: Vec<Act>) -> Result<()> {
        for a in acts {
            match self.core.act(a.order, &a.principal.to_string(), a.action) {
                Ok((_, transitions)) => {
                    self.applied += 1;
                    self.pending.extend(transitions.iter().map(|t| self.core.orders.notice(t)));
                }
                Err(CoreError::Illegal(_)) => self.refused += 1,
                Err(e) => return Err(anyhow::Error::new(e).context("the core failed on a responder's action")),
            }
        }
        Ok(())
    }

    async fn events(&mut self, msgs: &[Message], typed: Vec<Event>) -> Result<()> {
        let payloads: Vec<&[u8]> = msgs.iter().map(|m| &m.payload[..]).collect();
        let outcome = if typed.is_empty() {
            let topics: Vec<&str> = msgs.iter().map(|m| m.topic()).collect();
            self.core.ingest_on(&topics, &payloads)
        } else if msgs.is_empty() {
            // The same rules and orders as from the encoded stream (an experiment's equivalence test runs
            // one replication both ways), without JSON in between; the twin numbers each device's events,
            // so no id comes twice.
            self.core.ingest_unique_events(typed)
        } else {
            // Both (`run --broker none`): the store logs each payload as it was encoded, and the rules take
            // the same event typed instead of parsing it back. Debug builds check that parsing would
            // give the very same event.
            anyhow::ensure!(msgs.len() == typed.len(), "the twin handed over {} messages and {} typed events", msgs.len(), typed.len());
            if cfg!(debug_assertions) {
                for (m, e) in msgs.iter().zip(&typed) {
                    let parsed = towntwin_core::decode::decode_on(m.topic(), &m.payload, self.core.engine.devices());
                    assert_eq!(parsed.as_ref(), Ok(e), "a typed event differs from its payload parsed");
                }
            }
            // Not live QoS 0 traffic after a break: nothing in this process breaks.
            let qos0 = vec![false; msgs.len()];
            self.core.ingest_decoded(&payloads, &qos0, typed.into_iter().map(Ok).collect())
        }
        .context("the core failed")?;
        self.pending.extend(outcome.transitions.iter().map(|t| self.core.orders.notice(t)));
        Ok(())
    }

    async fn notices(&mut self, _: Option<Millis>) -> Result<Vec<Notice>> {
        Ok(std::mem::take(&mut self.pending))
    }

    async fn finish(mut self, _: u64, _: u64) -> Result<Option<CoreOutcome>> {
        self.core.close_snapshot().context("the core failed to commit its last batches or its snapshot")?;
        Ok(Some(CoreOutcome { core: self.core, mode: "in-process", actions_via: "in-process", applied: self.applied, refused: self.refused }))
    }

    fn takes_typed(&self) -> bool {
        true
    }
}

/// The core as a service on the broker (started with [`server::start`]), its HTTP API for the responders,
/// and, in lockstep, a subscription to its notices.
pub(crate) struct OverNetwork {
    handle: CoreHandle,
    actor: HttpActor,
    watch: Option<OrdersWatch>,
}

/// How long the run waits for the core's watermark of a tick, or for the core to drain at the end.
const CORE_LIMIT: Duration = Duration::from_secs(120);

impl OverNetwork {
    /// Starts the core on `ep` (subscribed before this returns, so it misses nothing the twin publishes)
    /// with its API where `cfg.http` says (by default a free loopback port); with `lockstep`, also watches
    /// `orders/#`.
    pub async fn start(mut cfg: CoreConfig, ep: &Endpoint, lockstep: bool) -> Result<OverNetwork> {
        cfg.ingest = IngestConfig {
            client_id: format!("towntwin-core-{}", std::process::id()),
            login: ep.login(crate::credentials::CORE)?,
            also: ep.others.clone(),
            ..IngestConfig::new(&ep.host, ep.port).for_town(cfg.ingest.ns.clone())
        };
        cfg.http = cfg.http.or(Some(([127, 0, 0, 1], 0).into()));
        let cfg_ns = cfg.ingest.ns.clone();
        let handle = server::start(cfg).await.context("the core could not start")?;
        let addr = handle.http_addr().ok_or_else(|| anyhow!("the core's HTTP API did not start"))?;
        tracing::info!("core HTTP API on http://{addr}");
        let actor = HttpActor::new(addr, handle.core().clone())?;
        let watch = if lockstep { Some(OrdersWatch::start_for(ep, &cfg_ns).await?) } else { None };
        Ok(OverNetwork { handle, actor, watch })
    }
}

impl OverNetwork {
    /// Where the core's HTTP API listens.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.handle.http_addr()
    }

    /// The core, for what the API does not offer (issuing tokens).
    pub fn core(&self) -> &std::sync::Arc<std::sync::Mutex<Core>> {
        self.handle.core()
    }
}

impl CoreLink for OverNetwork {
    async fn act(&mut self, acts: Vec<Act>) -> Result<()> {
        self.actor.apply(acts).await
    }

    async fn events(&mut self, _: &[Message], _: Vec<Event>) -> Result<()> {
        // The publisher has sent them; the core takes them from the broker.
        Ok(())
    }

    async fn notices(&mut self, tick: Option<Millis>) -> Result<Vec<Notice>> {
        match (self.watch.as_mut(), tick) {
            (Some(w), Some(t)) => w.until(t, CORE_LIMIT).await,
            _ => Ok(Vec::new()),
        }
    }

    async fn finish(self, published: u64, qos1: u64) -> Result<Option<CoreOutcome>> {
        let OverNetwork { handle, actor, watch } = self;
        if let Some(w) = watch {
            w.close().await;
        }
        // Until the core has taken everything published; QoS 0 telemetry may be shed by the broker, so once
        // every QoS 1 event is in, a quiet spell ends the wait too.
        let mut received = handle.received();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            let got = *received.borrow_and_update();
            if got >= published {
                break;
            }
            let quiet = if got >= qos1 { Duration::from_secs(5) } else { Duration::from_secs(30) };
            match tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + quiet), received.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the core stopped before taking the stream ({got} of {published} messages)"),
                Err(_) if got >= qos1 => break,
                Err(_) => {
                    tracing::warn!("the core received {got} of {published} messages ({qos1} at QoS 1) and nothing more for {} s", quiet.as_secs());
                    break;
                }
            }
        }
        // The actor holds the core (to issue tokens): let go of it before the service hands the core back.
        let (applied, refused) = (actor.applied, actor.refused);
        drop(actor);
        let core = handle.shutdown().await.context("the core service did not stop cleanly")?;
        Ok(Some(CoreOutcome { core, mode: "mqtt", actions_via: "http", applied, refused }))
    }
}
