//! Batches of incoming messages: gathered up to the batch size or the linger, decoded ahead in partitions.

use super::*;

/// What the batch loop is handed, in the order the broker delivered.
pub(super) enum Item {
    /// The connection was (re)made: from here on the core may have missed QoS 0 messages.
    Broke,
    Batch(Gathered),
}

/// One batch of messages as they came.
pub(super) struct Gathered {
    pub(super) batch: Vec<Publish>,
    /// The generation of the connection each came on (its acknowledgement goes only there).
    pub(super) generations: Vec<u64>,
    /// Each message decoded, when a partition decoded them (else the core decodes them itself).
    pub(super) decoded: Option<Vec<Result<crate::decode::Event, crate::decode::Reject>>>,
    /// A reconnect came right after the batch: handled once the batch is committed.
    pub(super) then_broke: bool,
}

/// Gathers batches from the connection on a task of its own and, with [`IngestConfig::partitions`] above one,
/// has them decoded in parallel: batch k goes to partition k mod N, each partition a thread that decodes its
/// batches in the order it gets them, and [`Batches::next`] takes them back from partition k mod N. So the
/// batch loop sees exactly the sequence one subscription delivered, decoded ahead of it, and applies it in
/// that order: the partitioned core makes the same work orders as the single one by construction (test:
/// `partitions_make_the_same_orders` in `harness/tests/it/server.rs`). What stays serial is what must be:
/// dedup, the rules, the orders and the store's commit, in one writer.
pub(super) struct Batches {
    /// From each partition (or from the gathering task, with one), its batches in order.
    outs: Vec<tokio::sync::mpsc::Receiver<Item>>,
    next: usize,
    _gather: AbortOnDrop,
}

/// Batches a partition may hold ahead of the writer.
const PARTITION_AHEAD: usize = 2;

impl Batches {
    pub(super) fn start(rx: tokio::sync::mpsc::UnboundedReceiver<Incoming>, cfg: &IngestConfig, devices: Arc<crate::decode::Devices>) -> Batches {
        // Decoding threads only for more than one partition.
        let threads = if cfg.partitions > 1 { cfg.partitions } else { 0 };
        let (mut ins, mut outs) = (Vec::with_capacity(threads.max(1)), Vec::with_capacity(threads.max(1)));
        for k in 0..threads {
            let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Item>(PARTITION_AHEAD);
            let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Item>(PARTITION_AHEAD);
            let devices = devices.clone();
            let spawned = std::thread::Builder::new().name(format!("ingest-decode-{k}")).spawn(move || {
                while let Some(mut item) = in_rx.blocking_recv() {
                    if let Item::Batch(g) = &mut item {
                        g.decoded = Some(g.batch.iter().map(|p| crate::decode::decode_on(&p.topic, &p.payload, &devices)).collect());
                    }
                    if out_tx.blocking_send(item).is_err() {
                        break;
                    }
                }
            });
            match spawned {
                Ok(_) => {
                    ins.push(in_tx);
                    outs.push(out_rx);
                }
                // With the partitions that did start.
                Err(e) => tracing::warn!("ingest: cannot start decode partition {k}: {e}"),
            }
        }
        if ins.is_empty() {
            // One partition (or none could start): straight to the writer, which decodes as it applies.
            let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Item>(PARTITION_AHEAD);
            ins.push(in_tx);
            outs.push(in_rx);
        }
        let cfg = cfg.clone();
        let gather = tokio::spawn(async move {
            let (mut rx, mut k) = (rx, 0usize);
            while let Some(item) = gather(&mut rx, &cfg).await {
                if ins[k].send(item).await.is_err() {
                    return;
                }
                k = (k + 1) % ins.len();
            }
        });
        Batches { outs, next: 0, _gather: AbortOnDrop(gather) }
    }

    /// The next batch (or reconnect) in the order the broker delivered; `None` once the connection's task
    /// has ended. Cancel-safe: nothing is lost when the caller stops waiting.
    pub(super) async fn next(&mut self) -> Option<Item> {
        let item = self.outs[self.next].recv().await?;
        self.next = (self.next + 1) % self.outs.len();
        Some(item)
    }
}

/// Waits for the first message of a batch, then takes what else is there, waiting up to
/// [`IngestConfig::batch_wait`] for each next one, until the batch is full, has gathered for
/// [`IngestConfig::batch_linger`], or a reconnect comes (flagged on the batch, handled after it).
async fn gather(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Incoming>, cfg: &IngestConfig) -> Option<Item> {
    let (g, first) = rx.recv().await?;
    let Some(first) = first else { return Some(Item::Broke) };
    let mut batch = Vec::with_capacity(cfg.batch_max);
    let mut generations = Vec::with_capacity(cfg.batch_max);
    batch.push(first);
    generations.push(g);
    let mut then_broke = false;
    let until = tokio::time::Instant::now() + cfg.batch_linger;
    while batch.len() < cfg.batch_max {
        // What is already queued needs no timer (at town rates most of a batch is).
        let next = match rx.try_recv() {
            Ok(x) => Some(x),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                let now = tokio::time::Instant::now();
                if now >= until {
                    break;
                }
                tokio::time::timeout(cfg.batch_wait.min(until - now), rx.recv()).await.ok().flatten()
            }
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
        };
        match next {
            Some((g, Some(p))) => {
                batch.push(p);
                generations.push(g);
            }
            Some((_, None)) => {
                then_broke = true;
                break;
            }
            None => break,
        }
    }
    Some(Item::Batch(Gathered { batch, generations, decoded: None, then_broke }))
}
