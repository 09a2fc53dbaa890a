//! The SQLite store, in WAL mode (the embedded default): an append-only log of every accepted input event (the engine's
//! state is a pure function of it), the work orders' current state, their append-only transition log, and
//! periodic snapshots of the engine so a restart replays only the events after the last one.
//!
//! WAL with `synchronous=NORMAL` is durable against the process being killed (what the core promises);
//! a power cut may lose the last transactions.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::orders::{Order, OrderEvent};

mod behind;
mod reader;
mod write;

pub use self::reader::Reader;
use super::ids::Ids;
use super::{Loaded, SnapshotJob, StoreError};

pub struct Store {
    conn: Connection,
    path: String,
    /// The file itself (`path` is its name as shown), for the write-behind thread's connection.
    file: std::path::PathBuf,
    /// Every logged event id, for dedup: see [`Ids`].
    ids: Ids,
    /// Dropped with the store: stops the checkpointer.
    _checkpointer: Option<StoreThread<()>>,
    /// Writes engine snapshots off the ingest path: see [`snapshotter`].
    snapshotter: Option<StoreThread<(i64, SnapshotJob)>>,
    /// The write-behind thread, once started (see [`Store::write_behind`]), and the next event's sequence.
    behind: Option<behind::Writer>,
    next_seq: i64,
}

/// A thread of the store's, with its own connection, fed through a channel. Dropped with the store: the
/// channel closes, and the thread finishes what it was handed and is waited for.
struct StoreThread<T> {
    tx: Option<std::sync::mpsc::Sender<T>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<T: Send + 'static> StoreThread<T> {
    fn spawn(name: &str, body: impl FnOnce(std::sync::mpsc::Receiver<T>) + Send + 'static) -> Option<StoreThread<T>> {
        let (tx, rx) = std::sync::mpsc::channel::<T>();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || body(rx)).ok()?;
        Some(StoreThread { tx: Some(tx), thread: Some(thread) })
    }

    /// Hands `t` over; gives it back if the thread has ended.
    fn send(&self, t: T) -> Result<(), T> {
        match &self.tx {
            Some(tx) => tx.send(t).map_err(|e| e.0),
            None => Err(t),
        }
    }
}

impl<T> Drop for StoreThread<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Encodes and writes engine snapshots from the store's own thread and connection. Encoding the engine's state
/// took 28-53 ms at 1.5-2.8 MB, every 100,000 events, inside a batch's commit: at 33,000 events/s a stall
/// every 3 s that alone set the p99 of the work-order latency. Now the ingest path only clones the state
/// (after the batch that the snapshot covers is committed, so a snapshot never covers an event the log does
/// not hold); a crash before the snapshot is written leaves the previous one, and a restart replays more.
/// What was handed over is written before the store closes.
fn snapshotter(path: &Path) -> Option<StoreThread<(i64, SnapshotJob)>> {
    let conn = Connection::open(path).ok()?;
    wait_when_busy(&conn).ok()?;
    // Checkpoints are the checkpointer's (or the writer's, without one): with SQLite's default, every
    // snapshot's commit copied the whole WAL into the database on this thread (0.16 s of a town day's run).
    // Durable against a kill, as the store's other writes are.
    conn.pragma_update(None, "wal_autocheckpoint", 0).ok()?;
    conn.pragma_update(None, "synchronous", "NORMAL").ok()?;
    StoreThread::spawn("engine-snapshot", move |rx: std::sync::mpsc::Receiver<(i64, SnapshotJob)>| {
        while let Ok(mut job) = rx.recv() {
            // Only the latest of those waiting is worth writing.
            while let Ok(later) = rx.try_recv() {
                job = later;
            }
            let (upto, make) = job;
            let written = make().and_then(|bytes| write_snapshot(&conn, upto, &bytes).map_err(|e| e.to_string()));
            if let Err(e) = written {
                tracing::warn!("engine snapshot up to event {upto} not written (a restart replays from the one before): {e}");
            }
        }
    })
}

fn write_snapshot(conn: &Connection, upto: i64, engine: &[u8]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute("INSERT OR REPLACE INTO snapshots (upto, engine) VALUES (?1, ?2)", params![upto, engine])?;
    tx.execute("DELETE FROM snapshots WHERE upto < ?1", [upto])?;
    tx.commit()
}

/// The WAL's size past which a checkpoint makes the writer rewind it. A RESTART holds the writer off for
/// its copy and the database's fsync: at 45,000 events/s, a 16 MiB cap checked ten times a second cut the
/// core to 30,800-39,900 events/s; at this cap it comes once every several seconds of such load.
const WAL_CAP: u64 = 256 << 20;
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Copies the WAL into the database from its own thread and connection, once a second, so that neither the
/// copy nor its fsync ever runs inside a commit of the ingest path (SQLite's automatic checkpoint would run
/// it there, a stall of tens of milliseconds every few seconds at town rates). PASSIVE checkpoints never
/// block the writer; the writer rewinds the WAL once a checkpoint has caught up.
///
/// Under sustained load a PASSIVE checkpoint never catches up (the writer adds frames while it copies), so
/// the WAL was never rewound: it grew by 37 MB a second at 45,000 events/s (400 MB in a 12 s load run, a full
/// disk in a soak). So once the WAL holds over [`WAL_CAP`] the checkpointer finishes with a RESTART
/// checkpoint, which holds the writer off while it copies the frames added since the PASSIVE one, so that
/// the next commit rewinds the WAL; the database file is synced after each PASSIVE so that the RESTART's own
/// sync is short. The channel carries nothing: its closing stops the thread.
fn checkpointer(path: &Path, every: std::time::Duration, cap: u64) -> Option<StoreThread<()>> {
    let conn = Connection::open(path).ok()?;
    // A RESTART checkpoint waits for the writer's transaction in progress, and for readers.
    wait_when_busy(&conn).ok()?;
    let page: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0)).ok()?.max(512) as u64;
    // The database file, to flush what the checkpoints copied into it without holding any lock.
    let db = std::fs::File::open(path).ok()?;
    // A PASSIVE checkpoint: (frames in the WAL, frames copied), or None on an error (logged).
    let passive = move |conn: &Connection| {
        let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)));
        // Under NORMAL, SQLite syncs the database only after a checkpoint that completes, which only the
        // RESTART below does: it then flushed everything the PASSIVE ones had copied since the last one
        // (42-66 ms, measured, with the writer held off). Flushed here as it goes, the RESTART's is short.
        if let Err(e) = db.sync_data() {
            tracing::warn!("WAL checkpoint: syncing the database file: {e}");
        }
        r.map(|(log, copied)| (log.max(0) as u64, copied.max(0) as u64)).inspect_err(|e| tracing::warn!("WAL checkpoint: {e}")).ok()
    };
    StoreThread::spawn("sqlite-checkpoint", move |rx: std::sync::mpsc::Receiver<()>| {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
            let Some((mut log, mut copied)) = passive(&conn) else { continue };
            if log * page <= cap {
                continue;
            }
            // Catch up with the writer in passes that do not hold it off (each copies what the writer added
            // during the one before, so they shorten), until what is left is a short copy...
            let mut passes = 1;
            while (log - copied.min(log)) > CATCH_UP_FRAMES && passes < 20 {
                let Some(next) = passive(&conn) else { break };
                (log, copied) = next;
                passes += 1;
            }
            // ... then hold the writer off for that short copy, after which its next commit rewinds the WAL.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                tracing::warn!("WAL checkpoint (restart): {e}");
            }
        }
    })
}

/// What a RESTART checkpoint may have left to copy while it holds the writer off (4 MiB at the default page
/// size): the catch-up passes before it stop there.
const CATCH_UP_FRAMES: u64 = 1_024;

/// How long a connection waits for another's lock before it fails with "database is locked".
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes `conn` wait up to [`BUSY_TIMEOUT`] for a lock, retrying every 200 µs. SQLite's own busy timeout
/// sleeps 1, 2, 5, 10, 15, 20, 25, 25, 50, 50 and then 100 ms between retries, so a writer held off for
/// 66 ms by a checkpoint waited until 78 or 103 ms (measured in load runs): the retries' steps, not the
/// lock, set the work orders' latency tail.
pub(super) fn wait_when_busy(conn: &Connection) -> rusqlite::Result<()> {
    const STEP: std::time::Duration = std::time::Duration::from_micros(200);
    fn retry(n: i32) -> bool {
        if (n as u128) * STEP.as_micros() >= BUSY_TIMEOUT.as_micros() {
            return false;
        }
        std::thread::sleep(STEP);
        true
    }
    conn.busy_handler(Some(retry))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, time INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, rule TEXT NOT NULL, key TEXT NOT NULL, area TEXT NOT NULL,
    state TEXT NOT NULL, level TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS orders_by_state ON orders(state);
CREATE TABLE IF NOT EXISTS order_events (seq INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, at INTEGER NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, level TEXT NOT NULL, reason TEXT);
CREATE INDEX IF NOT EXISTS order_events_by_order ON order_events(order_id);
CREATE TABLE IF NOT EXISTS snapshots (upto INTEGER PRIMARY KEY, engine BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rejects (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blind_spans (from_ms INTEGER PRIMARY KEY, until_ms INTEGER);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

impl Drop for Store {
    /// Closing the store waits for the write-behind thread to commit what it was handed.
    fn drop(&mut self) {
        if let Err(e) = self.drain() {
            tracing::warn!("{e}: batches handed to the writer were not all committed");
        }
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        let sql = |source| StoreError::Sql { path: p.clone(), source };
        let conn = Connection::open(path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql)?;
        // Another process may write briefly (`towntwin core token issue`): wait for it rather than fail.
        wait_when_busy(&conn).map_err(sql)?;
        // The event log grows by ~300 MB a town day: a large page cache and memory-mapped reads keep the
        // id index in memory. Checkpoints run on their own thread (see [`checkpointer`]).
        conn.pragma_update(None, "cache_size", -16_384).map_err(sql)?;
        conn.pragma_update(None, "mmap_size", 1_i64 << 30).map_err(sql)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.execute_batch(crate::audit::SCHEMA).map_err(sql)?;
        crate::auth::tokens_table(&conn).map_err(sql)?;
        let checkpointer = checkpointer(path, CHECKPOINT_EVERY, WAL_CAP);
        if checkpointer.is_none() {
            // Without one, SQLite's own checkpoints keep the WAL bounded, in the commit path.
            conn.pragma_update(None, "wal_autocheckpoint", 8_192).map_err(sql)?;
        }
        let mut ids = Ids::default();
        {
            let mut stmt = conn.prepare("SELECT seq, id FROM events").map_err(sql)?;
            let mut rows = stmt.query([]).map_err(sql)?;
            while let Some(r) = rows.next().map_err(sql)? {
                let (seq, id): (i64, String) = (r.get(0).map_err(sql)?, r.get(1).map_err(sql)?);
                ids.insert(Ids::hash(&id), seq);
            }
        }
        let snapshotter = snapshotter(path);
        Ok(Store { conn, path: p, file: path.to_path_buf(), ids, _checkpointer: checkpointer, snapshotter, behind: None, next_seq: 0 })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sql { path: self.path.clone(), source }
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        self.drain()?;
        let orders = reader::orders(&self.conn, &self.path)?;
        // Older stores hold JSON text, newer ones a blob: the bytes either way.
        let snapshot: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row("SELECT upto, engine FROM snapshots ORDER BY upto DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get_ref(1)?.as_bytes()?.to_vec())))
            .optional()
            .map_err(|e| self.err(e))?;
        let after = snapshot.as_ref().map_or(0, |s| s.0);
        let mut stmt = self.conn.prepare("SELECT seq, payload FROM events WHERE seq > ?1 ORDER BY seq").map_err(|e| self.err(e))?;
        let replay =
            stmt.query_map([after], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.err(e))?.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))?;
        let mut stmt = self.conn.prepare("SELECT reason, count FROM rejects").map_err(|e| self.err(e))?;
        let rejects = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        let mut stmt = self.conn.prepare("SELECT from_ms, until_ms FROM blind_spans ORDER BY from_ms").map_err(|e| self.err(e))?;
        let blind = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.err(e))?.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))?;
        let qos0_seen =
            self.conn.query_row("SELECT value FROM meta WHERE key = 'qos0_seen'", [], |r| r.get::<_, i64>(0)).optional().map_err(|e| self.err(e))?;
        Ok(Loaded { orders, snapshot, replay, rejects, blind, qos0_seen: qos0_seen == Some(1) })
    }

    /// Keeps a token's hash for `principal`, with its audit entry (committed at once, after what is held).
    pub fn put_token(&mut self, hash: &str, principal: &str, audit: &crate::audit::Entry) -> Result<(), StoreError> {
        self.direct(|c| {
            c.execute("INSERT INTO tokens (hash, principal) VALUES (?1, ?2)", params![hash, principal])?;
            crate::audit::append(c, audit).map(drop)
        })
    }

    /// Runs `f` in a transaction of its own on the store's connection, committed before this returns, after
    /// the batches held (or handed to the write-behind thread) are.
    fn direct(&mut self, f: impl FnOnce(&Connection) -> rusqlite::Result<()>) -> Result<(), StoreError> {
        self.drain()?;
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| self.err(e))?;
        match f(&self.conn).and_then(|()| self.conn.execute_batch("COMMIT")) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(self.err(e))
            }
        }
    }

    /// Hands every later batch's writes to a thread of the store's, which writes them in order and commits
    /// every `group` batches, while the caller goes on (see [`behind`]). For a caller whose event ids never
    /// repeat (they are not looked up) and which acknowledges nothing to anyone: the twin's own core.
    /// Reads through this store (and [`Store::sync_writes`]) wait until what was handed over is committed.
    pub fn write_behind(&mut self, group: u32) -> Result<(), StoreError> {
        if self.behind.is_some() {
            return Ok(());
        }
        self.next_seq = self.conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM events", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        let checkpointed = self._checkpointer.is_some();
        self.behind = Some(behind::Writer::start(&self.file, group, checkpointed).map_err(|e| self.err(e))?);
        Ok(())
    }

    /// Waits for the write-behind thread, if there is one, to commit what it was handed.
    fn drain(&self) -> Result<(), StoreError> {
        match &self.behind {
            Some(w) => w.drain().map_err(|detail| StoreError::Behind { path: self.path.clone(), detail }),
            None => Ok(()),
        }
    }

    /// Waits until the batches handed to the write-behind thread are committed (at once without one).
    pub fn sync_writes(&mut self) -> Result<(), StoreError> {
        self.drain()
    }

    /// The principal a token's hash was issued for (tokens issued by another process included).
    pub fn token(&self, hash: &str) -> Result<Option<String>, StoreError> {
        self.drain()?;
        // Revoked or expired tokens are no one's.
        self.conn
            .query_row(
                "SELECT principal FROM tokens WHERE hash = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
                params![hash, crate::auth::wall_ms()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Writes an engine snapshot covering the log up to `upto` (committed): on the snapshot thread, or here
    /// when there is none.
    pub fn snapshot(&self, upto: i64, make: SnapshotJob) -> Result<(), StoreError> {
        // Only over committed events: what the write-behind thread was handed is committed first.
        self.drain()?;
        let make = match &self.snapshotter {
            Some(s) => match s.send((upto, make)) {
                Ok(()) => return Ok(()),
                Err((_, make)) => make,
            },
            None => make,
        };
        let bytes = make().map_err(|detail| StoreError::Corrupt { path: self.path.clone(), detail })?;
        write_snapshot(&self.conn, upto, &bytes).map_err(|e| self.err(e))
    }

    /// Starts a transaction for one batch; nothing is visible or durable until [`Batch::commit`]. It takes
    /// the write lock at once (`IMMEDIATE`), so the audit chain's head it reads stays the head until it
    /// commits, whatever other process writes to the store. Writing behind ([`Store::write_behind`]), the
    /// batch only gathers its writes; its commit hands them to the writer thread, which takes the lock.
    pub fn batch(&mut self) -> Result<Batch<'_>, StoreError> {
        let path = self.path.clone();
        let Store { conn, ids, behind, next_seq, .. } = self;
        if let Some(writer) = behind {
            if let Some(detail) = writer.failed() {
                return Err(StoreError::Behind { path, detail });
            }
            let first = *next_seq;
            let events = Box::new(behind::Events::starting_at(first));
            return Ok(Batch { path, to: To::Behind { writer, events, ops: Default::default(), next: next_seq, first, ids, added: Vec::new() }, done: false });
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(|source| StoreError::Sql { path: path.clone(), source })?;
        Ok(Batch { path, to: To::Conn { tx: Some(tx), ids, added: Vec::new() }, done: false })
    }

    pub fn probe(&self) -> Result<(), StoreError> {
        self.drain()?;
        self.conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").map_err(|e| self.err(e))
    }

    /// Caps the store at `extra` more pages than it has now (SQLite's `max_page_count`): from there every
    /// write fails as a full disk does. For fault tests; returns the cap. The cap is this connection's:
    /// writes behind (on the writer thread's connection) are not capped.
    pub fn limit_pages(&self, extra: i64) -> Result<i64, StoreError> {
        self.drain()?;
        let now: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        let cap: i64 = self.conn.query_row(&format!("PRAGMA max_page_count = {}", now + extra.max(0)), [], |r| r.get(0)).map_err(|e| self.err(e))?;
        Ok(cap)
    }

    /// The audit log's chain, checked (see [`crate::audit::verify`]).
    pub fn verify_audit(&self, head: Option<&str>) -> Result<crate::audit::Verified, crate::audit::Broken> {
        // A writer that failed left a prefix, which is what is checked.
        let _ = self.drain();
        crate::audit::verify(&self.conn, head)
    }

    /// The audit log's entries in order.
    pub fn audit_entries(&self) -> Result<Vec<crate::audit::Stored>, StoreError> {
        self.drain()?;
        crate::audit::entries(&self.conn).map_err(|e| self.err(e))
    }

    /// Events in the log.
    pub fn event_count(&self) -> Result<i64, StoreError> {
        self.drain()?;
        self.conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    /// One order's transitions, in the order they were appended.
    pub fn order_events(&self, order: u64) -> Result<Vec<OrderEvent>, StoreError> {
        self.drain()?;
        reader::transitions(&self.conn, &self.path, Some(order))
    }
}

/// One batch's writes, in one transaction, or handed to the write-behind thread on commit (see
/// [`Store::write_behind`]). Dropped without [`Batch::commit`], it rolls back, ids included (writing
/// behind, nothing of it was handed over).
pub struct Batch<'a> {
    path: String,
    to: To<'a>,
    /// Whether [`Batch::commit`] ran.
    done: bool,
}

enum To<'a> {
    /// The store's own connection, in the batch's transaction (always `Some` until [`Batch::commit`]).
    Conn {
        tx: Option<rusqlite::Transaction<'a>>,
        ids: &'a mut Ids,
        /// Ids this batch added, taken back if it does not commit.
        added: Vec<(u64, i64)>,
    },
    /// The writes kept to hand to the write-behind thread; events numbered from `next` on.
    Behind {
        writer: &'a behind::Writer,
        events: Box<behind::Events>,
        ops: std::cell::RefCell<Vec<behind::Op>>,
        next: &'a mut i64,
        first: i64,
        ids: &'a mut Ids,
        /// Ids this batch put in the index (debug builds, for the check that none repeats), taken back
        /// if it is dropped.
        added: Vec<(u64, i64)>,
    },
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match &mut self.to {
            // The transaction rolls back as it drops.
            To::Conn { ids, added, .. } => {
                for (h, seq) in added.drain(..) {
                    ids.remove(h, seq);
                }
            }
            // Nothing was handed over: the numbers are free again, and the ids.
            To::Behind { next, first, ids, added, .. } => {
                **next = *first;
                for (h, seq) in added.drain(..) {
                    ids.remove(h, seq);
                }
            }
        }
    }
}

impl<'a> Batch<'a> {
    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sql { path: self.path.clone(), source }
    }

    /// Runs `f` on the open transaction, or keeps the write it makes for the write-behind thread.
    fn write(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<()>, op: impl FnOnce() -> behind::Op) -> Result<(), StoreError> {
        match &self.to {
            To::Conn { tx, .. } => f(open(tx)).map_err(|e| self.err(e)),
            To::Behind { ops, .. } => {
                ops.borrow_mut().push(op());
                Ok(())
            }
        }
    }

    /// Appends an input event; returns its sequence, or `None` when its id was seen before. Writing behind,
    /// ids are not looked up (the caller's never repeat; debug builds check).
    pub fn append_event(&mut self, id: &str, time: i64, payload: &[u8]) -> Result<Option<i64>, StoreError> {
        let path = &self.path;
        let err = |source| StoreError::Sql { path: path.clone(), source };
        match &mut self.to {
            To::Conn { tx, ids, added } => {
                let conn = open(tx);
                let h = Ids::hash(id);
                for seq in ids.candidates(h).collect::<Vec<_>>() {
                    if write::event_id(conn, seq).map_err(err)?.as_deref() == Some(id) {
                        return Ok(None);
                    }
                }
                let seq = write::event(conn, None, id, time, payload).map_err(err)?;
                ids.insert(h, seq);
                added.push((h, seq));
                Ok(Some(seq))
            }
            To::Behind { events, next, ids, added, .. } => {
                if cfg!(debug_assertions) {
                    let h = Ids::hash(id);
                    assert!(ids.candidates(h).next().is_none(), "event id {id} handed twice to a store writing behind");
                    ids.insert(h, **next);
                    added.push((h, **next));
                }
                let seq = **next;
                **next += 1;
                events.push(id, time, payload);
                Ok(Some(seq))
            }
        }
    }

    pub fn put_order(&self, o: &Order) -> Result<(), StoreError> {
        match &self.to {
            To::Conn { tx, .. } => write::order(open(tx), o).map_err(|detail| StoreError::Corrupt { path: self.path.clone(), detail }),
            To::Behind { ops, .. } => {
                ops.borrow_mut().push(behind::Op::Order(Box::new(o.clone())));
                Ok(())
            }
        }
    }

    pub fn append_order_event(&self, e: &OrderEvent) -> Result<(), StoreError> {
        self.write(|c| write::order_event(c, e), || behind::Op::OrderEvent(e.clone()))
    }

    /// Appends an audit entry (see [`crate::audit`]) in this batch's transaction.
    pub fn audit(&self, e: &crate::audit::Entry) -> Result<(), StoreError> {
        self.write(|c| crate::audit::append(c, e).map(drop), || behind::Op::Audit(e.clone()))
    }

    /// Records a blind span's start, or its end.
    pub fn blind_span(&self, from: i64, until: Option<i64>) -> Result<(), StoreError> {
        self.write(|c| write::blind_span(c, from, until), || behind::Op::BlindSpan(from, until))
    }

    /// Records that a message came at QoS 0.
    pub fn qos0_seen(&self) -> Result<(), StoreError> {
        self.write(write::qos0_seen, || behind::Op::Qos0Seen)
    }

    pub fn count_reject(&self, reason: &str) -> Result<(), StoreError> {
        self.write(|c| write::reject(c, reason), || behind::Op::Reject(reason.to_string()))
    }

    /// Commits this batch; or, writing behind, hands it to the writer thread.
    pub fn commit(mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        match &mut self.to {
            To::Conn { tx, added, .. } => {
                if let Some(tx) = tx.take() {
                    // Failed, the batch drops and takes its ids back.
                    tx.commit().map_err(|source| StoreError::Sql { path, source })?;
                }
                // Committed: the ids stay.
                added.clear();
                self.done = true;
                Ok(())
            }
            To::Behind { writer, events, ops, .. } => {
                self.done = true;
                writer.send(std::mem::take(&mut **events), ops.take()).map_err(|detail| StoreError::Behind { path, detail })
            }
        }
    }
}

/// A batch's transaction, there until [`Batch::commit`] consumes the batch.
fn open<'t>(tx: &'t Option<rusqlite::Transaction<'_>>) -> &'t Connection {
    tx.as_ref().expect("a batch's transaction is there until commit consumes the batch")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sustained writes with a checkpointer beside them: without the RESTART step the WAL only grows.
    #[test]
    fn the_wal_stays_bounded_under_sustained_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("core.db");
        let mut store = Store::open(&path).unwrap();
        // This store's own checkpointer, every 20 ms, capped at 1 MiB.
        store._checkpointer = checkpointer(&path, std::time::Duration::from_millis(20), 1 << 20);
        let wal = dir.path().join("core.db-wal");
        let payload = vec![b'x'; 400];
        let (mut largest, mut n) = (0u64, 0u64);
        let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
        while std::time::Instant::now() < until {
            let mut b = store.batch().unwrap();
            for _ in 0..50 {
                b.append_event(&format!("src id-{n}"), n as i64, &payload).unwrap();
                n += 1;
            }
            b.commit().unwrap();
            // The ingest loop lets go of the store between batches (it gathers the next one).
            std::thread::sleep(std::time::Duration::from_micros(200));
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        let written = n * 450;
        assert!(written > 16 << 20, "enough written to tell: {written} bytes");
        // Unbounded, the WAL holds everything written. Bounded, it holds what the writer adds while the
        // checkpointer catches up, which scales with the disk's fsync time: 9 MiB of 56 written on a CI
        // machine with a slow disk, under 2 MiB here. A third tells the two apart on any disk.
        assert!(largest < written / 3, "the WAL reached {largest} bytes for {written} written");
        assert_eq!(store.conn.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0)).unwrap() as u64, n);
    }

    /// A new store in a temporary folder, writing behind in groups of `group`.
    fn behind(group: u32) -> (tempfile::TempDir, std::path::PathBuf, Store) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("core.db");
        let mut store = Store::open(&path).unwrap();
        store.write_behind(group).unwrap();
        (dir, path, store)
    }

    /// Writing behind: batches land in order and numbered as handed; a dropped batch gives its numbers back;
    /// reads wait for the writer; a write that fails stops the writer, and the store says why on every later
    /// batch (an error, not a panic), with what was committed before it kept.
    #[test]
    fn writing_behind_keeps_order_waits_for_reads_and_reports_a_failed_write() {
        let (_dir, path, mut store) = behind(4);
        for n in 0..10i64 {
            let mut b = store.batch().unwrap();
            assert_eq!(b.append_event(&format!("src id-{n}"), n, b"{}").unwrap(), Some(n + 1));
            b.count_reject("late").unwrap();
            b.commit().unwrap();
        }
        {
            let mut b = store.batch().unwrap();
            assert_eq!(b.append_event("src id-10", 10, b"{}").unwrap(), Some(11));
            // Dropped without commit: nothing handed over, its number and its id free again (debug builds
            // check that no id is handed twice).
        }
        let mut b = store.batch().unwrap();
        assert_eq!(b.append_event("src id-10", 10, b"{}").unwrap(), Some(11));
        b.commit().unwrap();
        // Not a multiple of the group: the read waits for the writer to commit what it holds.
        assert_eq!(store.event_count().unwrap(), 11);
        let other = Connection::open(&path).unwrap();
        let ids: Vec<String> = other.prepare("SELECT id FROM events ORDER BY seq").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert_eq!(ids, (0..11).map(|n| format!("src id-{n}")).collect::<Vec<_>>());
        let late: i64 = other.query_row("SELECT count FROM rejects WHERE reason = 'late'", [], |r| r.get(0)).unwrap();
        assert_eq!(late, 10);

        // The events table gone under it: the writer's next insert fails.
        other.execute_batch("DROP TABLE events").unwrap();
        let mut b = store.batch().unwrap();
        b.append_event("src id-11", 11, b"{}").unwrap();
        b.commit().unwrap();
        let err = store.sync_writes().unwrap_err().to_string();
        assert!(err.contains("writing behind stopped") && err.contains("events"), "{err}");
        let err = store.batch().err().expect("a stopped writer refuses the next batch").to_string();
        assert!(err.contains("writing behind stopped"), "{err}");
        let late: i64 = other.query_row("SELECT count FROM rejects WHERE reason = 'late'", [], |r| r.get(0)).unwrap();
        assert_eq!(late, 10, "what was committed before the failure is kept");
        drop(store);
    }

    /// Writing behind at a run's slowest (a batch a minute at `--speed 1`), a batch is not held until its
    /// group is whole: another reader sees it within about a second, without the store being asked.
    #[test]
    fn writing_behind_commits_a_lone_batch_within_a_second() {
        let (_dir, path, mut store) = behind(1_000);
        let mut b = store.batch().unwrap();
        b.append_event("src alone", 1, b"{}").unwrap();
        b.commit().unwrap();
        let reader = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let t = std::time::Instant::now();
        let count = || reader.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0)).unwrap();
        while count() == 0 {
            assert!(t.elapsed() < std::time::Duration::from_secs(10), "a lone batch held past 10 s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(3), "committed after {:?}", t.elapsed());
        drop(store);
    }
}
