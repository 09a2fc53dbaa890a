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
use serde::Serialize;
use towntwin_core::orders::Notice;
use towntwin_core::service::Core;
use towntwin_core::time::{Millis, rfc3339};
use towntwin_sim::{Act, ResponderStats};

use crate::broker::Endpoint;
use crate::transport::{Heard, OrdersFeed};

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

/// The core's notices for the lockstep: read from the [`OrdersFeed`] up to the watermark of each tick.
pub struct OrdersWatch {
    feed: OrdersFeed,
}

impl OrdersWatch {
    pub async fn start(ep: &Endpoint) -> Result<OrdersWatch> {
        OrdersWatch::start_for(ep, &towntwin_core::event::Namespace::default()).await
    }

    /// [`OrdersWatch::start`] for the town `ns`.
    pub async fn start_for(ep: &Endpoint, ns: &towntwin_core::event::Namespace) -> Result<OrdersWatch> {
        Ok(OrdersWatch { feed: OrdersFeed::start_for(ep, "towntwin-responders", ns).await? })
    }

    /// The notices published until the core's watermark reaches `tick` (the minute's closing clock tick).
    /// A lost connection or a message that is not the core's fails the lockstep at once.
    pub async fn until(&mut self, tick: Millis, limit: Duration) -> Result<Vec<Notice>> {
        let mut out = Vec::new();
        loop {
            let got = tokio::time::timeout(limit, self.feed.recv())
                .await
                .map_err(|_| anyhow!("the core did not report event time {} within {} s", rfc3339(tick), limit.as_secs()))?;
            match got.map(|(_, h)| h) {
                Some(Heard::Notice(n)) => out.push(*n),
                Some(Heard::Watermark(now)) if now >= tick => return Ok(out),
                Some(Heard::Watermark(_)) => {}
                Some(Heard::Bad(e) | Heard::Lost(e)) => bail!("{e}"),
                None => bail!("the orders subscription ended"),
            }
        }
    }

    pub async fn close(self) {
        self.feed.close().await;
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
