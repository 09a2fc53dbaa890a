//! The broker's raw ceiling: one publisher sends QoS 0 messages of a given size as fast as it can and one
//! subscriber counts what arrives. The twin's own publishing rate is judged against this figure.

use std::time::{Duration, Instant};

use anyhow::Result;
use rumqttc::{AsyncClient, QoS};
use serde::Serialize;

use crate::broker::Endpoint;
use crate::mqtt::Observer;

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub payload_bytes: usize,
    pub messages: u64,
    pub delivered: u64,
    pub seconds: f64,
    pub published_per_second: f64,
    pub delivered_per_second: f64,
}

pub async fn measure(ep: &Endpoint, messages: u64, payload_bytes: usize) -> Result<Ceiling> {
    let observer = Observer::start(ep, "bench/ceiling/#", false).await?;
    let client = crate::transport::Client { capacity: Some(20_000), ..crate::transport::Client::PLAIN };
    let o = crate::transport::options(ep, &format!("towntwin-ceiling-{}", std::process::id()), crate::credentials::OBSERVER, client)?;
    let (client, mut el) = AsyncClient::new(o, 20_000);
    let task = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let payload = vec![b'x'; payload_bytes.max(1)];
    let started = Instant::now();
    for i in 0..messages {
        client.publish(format!("bench/ceiling/{}", i % 64), QoS::AtMostOnce, false, payload.clone()).await?;
    }
    let published_at = started.elapsed();
    let delivered = observer.wait_for(messages, Duration::from_secs(2), Duration::from_secs(60)).await;
    // The last two quiet seconds are not delivery time: measure up to the last arrival.
    let seconds = observer_busy(started.elapsed(), delivered >= messages);
    let _ = client.try_disconnect();
    task.abort();
    observer.close().await;
    Ok(Ceiling {
        payload_bytes,
        messages,
        delivered,
        seconds,
        published_per_second: messages as f64 / published_at.as_secs_f64().max(1e-9),
        delivered_per_second: delivered as f64 / seconds.max(1e-9),
    })
}

fn observer_busy(elapsed: Duration, complete: bool) -> f64 {
    let s = elapsed.as_secs_f64();
    if complete { s } else { (s - 2.0).max(1e-3) }
}
