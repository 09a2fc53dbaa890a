//! Write-behind: a batch's writes handed to a thread of the store's with its own connection, which runs
//! them in order and commits them in groups, while the core goes on with the next batch. For a core whose
//! input ids never repeat and which acknowledges nothing to anyone (the twin's own, in its process): the
//! store's inserts and commits were most of `run --broker none`'s ingest thread, and the twin waits for
//! that thread each tick (the responders answer the orders of the tick before).
//!
//! What is handed over is written in order; the store stays a prefix of what was handed (a kill loses the
//! batches not yet committed, never part of one). A transaction stays open a second at most; batches
//! queued behind it (64 at most) wait their turn. A write that fails stops the thread's writing: its
//! transaction is rolled back and every later call of the store's says why.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::orders::{Order, OrderEvent};

use super::write;

/// A batch's events, numbered on from `first`, packed into a few buffers (a tick's 600 events were 1,200
/// allocations made on the core's thread and freed on the writer's).
#[derive(Default)]
pub(super) struct Events {
    first: i64,
    ids: String,
    id_ends: Vec<usize>,
    times: Vec<i64>,
    payloads: Vec<u8>,
    payload_ends: Vec<usize>,
}

impl Events {
    pub(super) fn starting_at(first: i64) -> Events {
        Events { first, ..Events::default() }
    }

    pub(super) fn push(&mut self, id: &str, time: i64, payload: &[u8]) {
        self.ids.push_str(id);
        self.id_ends.push(self.ids.len());
        self.times.push(time);
        self.payloads.extend_from_slice(payload);
        self.payload_ends.push(self.payloads.len());
    }

    /// (sequence, id, time, payload) of each, in order.
    fn iter(&self) -> impl Iterator<Item = (i64, &str, i64, &[u8])> {
        let starts = |ends: &[usize]| std::iter::once(0).chain(ends.iter().copied()).collect::<Vec<_>>();
        let (id_starts, payload_starts) = (starts(&self.id_ends), starts(&self.payload_ends));
        (0..self.times.len()).map(move |i| {
            (self.first + i as i64, &self.ids[id_starts[i]..id_starts[i + 1]], self.times[i], &self.payloads[payload_starts[i]..payload_starts[i + 1]])
        })
    }
}

/// One write of a batch besides its events, owned so that it can cross to the thread.
pub(super) enum Op {
    Order(Box<Order>),
    OrderEvent(OrderEvent),
    Audit(crate::audit::Entry),
    BlindSpan(i64, Option<i64>),
    Qos0Seen,
    Reject(String),
}

enum Job {
    Batch(Events, Vec<Op>),
    /// Commit what is held and answer (the error that stopped the thread, if one did).
    Commit(std::sync::mpsc::Sender<Result<(), String>>),
}

/// Batches handed over and not yet written that the channel holds before the core waits: a bound on the
/// memory the thread may be behind by (a tick's batch is about 600 events, 200 KB).
const BEHIND: usize = 64;

pub(super) struct Writer {
    tx: Option<SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Why the thread stopped writing, once it has.
    failed: Arc<Mutex<Option<String>>>,
}

impl Writer {
    /// Starts the thread on its own connection to `path`; it commits every `group` batches. Without the
    /// store's checkpointer (`checkpointed` false) its commits checkpoint the WAL themselves, as the store's
    /// own connection's would.
    pub(super) fn start(path: &std::path::Path, group: u32, checkpointed: bool) -> rusqlite::Result<Writer> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -16_384)?;
        conn.pragma_update(None, "wal_autocheckpoint", if checkpointed { 0 } else { 8_192 })?;
        super::wait_when_busy(&conn)?;
        let failed = Arc::new(Mutex::new(None));
        let (tx, rx) = sync_channel(BEHIND);
        let why = failed.clone();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(conn, rx, group.max(1), why))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Writer { tx: Some(tx), thread: Some(thread), failed })
    }

    /// Why the thread stopped writing, if it has.
    pub(super) fn failed(&self) -> Option<String> {
        self.failed.lock().map(|f| f.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Hands a batch over (waiting while the thread is [`BEHIND`] batches behind).
    pub(super) fn send(&self, events: Events, ops: Vec<Op>) -> Result<(), String> {
        if let Some(why) = self.failed() {
            return Err(why);
        }
        match &self.tx {
            Some(tx) => tx.send(Job::Batch(events, ops)).map_err(|_| self.failed().unwrap_or_else(|| "the store's writer thread has ended".into())),
            None => Err("the store's writer thread has ended".into()),
        }
    }

    /// Waits until everything handed over is written and committed.
    pub(super) fn drain(&self) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let gone = || self.failed().unwrap_or_else(|| "the store's writer thread has ended".into());
        self.tx.as_ref().ok_or_else(gone)?.send(Job::Commit(tx)).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

impl Drop for Writer {
    /// Closing the channel: the thread writes and commits what it was handed, and is waited for.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The longest a transaction stays open: a run at `--speed 1` makes a batch a minute, and 128 of them
/// held would keep the store two hours behind what a reader (or a kill) sees. Flat out, 128 batches take
/// a fraction of this. When to commit is the store's housekeeping, like its checkpoints: no rule reads it.
const HOLD_AT_MOST: Duration = Duration::from_secs(1);

fn run(conn: Connection, rx: Receiver<Job>, group: u32, failed: Arc<Mutex<Option<String>>>) {
    let mut held = 0u32;
    // When the open transaction began, if one is open.
    let mut open: Option<Instant> = None;
    let stop = |why: String, open: &mut Option<Instant>| {
        tracing::error!("the store's writer stopped: {why}");
        if open.take().is_some() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if let Ok(mut f) = failed.lock() {
            f.get_or_insert(why);
        }
    };
    let commit = |open: &mut Option<Instant>, held: &mut u32| -> Result<(), String> {
        *held = 0;
        if open.take().is_none() {
            return Ok(());
        }
        conn.execute_batch("COMMIT").map_err(|e| {
            // SQLite may leave the transaction open after a failed commit: end it, so that the write lock
            // is not held for the snapshot thread, the checkpointer and other processes.
            let _ = conn.execute_batch("ROLLBACK");
            format!("commit: {e}")
        })
    };
    let stopped = || failed.lock().map(|f| f.is_some()).unwrap_or(true);
    loop {
        // With a transaction open, wait for the next batch only as long as it may stay open.
        let job = match open {
            Some(at) => match rx.recv_timeout(HOLD_AT_MOST.saturating_sub(at.elapsed())) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            },
        };
        match job {
            None => {
                if let Err(why) = commit(&mut open, &mut held) {
                    stop(why, &mut open);
                }
            }
            Some(Job::Batch(events, ops)) => {
                if stopped() {
                    continue;
                }
                let written = (|| {
                    let began = match open {
                        Some(at) => at,
                        None => {
                            conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| format!("begin: {e}"))?;
                            *open.insert(Instant::now())
                        }
                    };
                    write::events(&conn, events.iter()).map_err(|e| e.to_string())?;
                    for op in &ops {
                        apply(&conn, op)?;
                    }
                    held += 1;
                    if held >= group || began.elapsed() >= HOLD_AT_MOST { commit(&mut open, &mut held) } else { Ok(()) }
                })();
                if let Err(why) = written {
                    stop(why, &mut open);
                }
            }
            Some(Job::Commit(answer)) => {
                if !stopped()
                    && let Err(why) = commit(&mut open, &mut held)
                {
                    stop(why, &mut open);
                }
                let _ = answer.send(match failed.lock() {
                    Ok(f) => f.clone().map_or(Ok(()), Err),
                    Err(_) => Err("the store's writer thread panicked".into()),
                });
            }
        }
    }
    if !stopped()
        && let Err(why) = commit(&mut open, &mut held)
    {
        stop(why, &mut open);
    }
}

fn apply(conn: &Connection, op: &Op) -> Result<(), String> {
    let sql = |e: rusqlite::Error| e.to_string();
    match op {
        Op::Order(o) => write::order(conn, o),
        Op::OrderEvent(e) => write::order_event(conn, e).map_err(sql),
        Op::Audit(e) => crate::audit::append(conn, e).map(drop).map_err(sql),
        Op::BlindSpan(from, until) => write::blind_span(conn, *from, *until).map_err(sql),
        Op::Qos0Seen => write::qos0_seen(conn).map_err(sql),
        Op::Reject(r) => write::reject(conn, r).map_err(sql),
    }
}
