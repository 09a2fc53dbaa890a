//! The durable store: SQLite in WAL mode. An append-only log of every accepted input event (the engine's
//! state is a pure function of it), the work orders' current state, their append-only transition log, and
//! periodic snapshots of the engine so a restart replays only the events after the last one.
//!
//! WAL with `synchronous=NORMAL` is durable against the process being killed (what the core promises);
//! a power cut may lose the last transactions.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::orders::{Order, OrderEvent};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sql { path: String, source: rusqlite::Error },
    #[error("store {path}: corrupt row: {detail}")]
    Corrupt { path: String, detail: String },
}

pub struct Store {
    conn: Connection,
    path: String,
}

/// What a restart loads.
pub struct Loaded {
    pub orders: Vec<Order>,
    /// The latest engine snapshot (JSON) and the last event sequence it includes.
    pub snapshot: Option<(i64, String)>,
    /// Events after the snapshot, in commit order: (seq, payload).
    pub replay: Vec<(i64, Vec<u8>)>,
    pub rejects: Vec<(String, u64)>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, time INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, rule TEXT NOT NULL, key TEXT NOT NULL, area TEXT NOT NULL,
    state TEXT NOT NULL, level TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS orders_by_state ON orders(state);
CREATE TABLE IF NOT EXISTS order_events (seq INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, at INTEGER NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, level TEXT NOT NULL, reason TEXT);
CREATE INDEX IF NOT EXISTS order_events_by_order ON order_events(order_id);
CREATE TABLE IF NOT EXISTS snapshots (upto INTEGER PRIMARY KEY, engine TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejects (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
";

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        let sql = |source| StoreError::Sql { path: p.clone(), source };
        let conn = Connection::open(path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql)?;
        // The event log grows by ~300 MB a town day: a large page cache and memory-mapped reads keep the
        // id index in memory, and rarer checkpoints copy the WAL in bigger runs.
        conn.pragma_update(None, "cache_size", -16_384).map_err(sql)?;
        conn.pragma_update(None, "mmap_size", 1_i64 << 30).map_err(sql)?;
        conn.pragma_update(None, "wal_autocheckpoint", 8_192).map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        Ok(Store { conn, path: p })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sql { path: self.path.clone(), source }
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let mut stmt = self.conn.prepare("SELECT body FROM orders ORDER BY id").map_err(|e| self.err(e))?;
        let bodies: Vec<String> = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
        let orders = bodies
            .iter()
            .map(|b| serde_json::from_str::<Order>(b).map_err(|e| StoreError::Corrupt { path: self.path.clone(), detail: e.to_string() }))
            .collect::<Result<Vec<_>, _>>()?;
        let snapshot: Option<(i64, String)> = self
            .conn
            .query_row("SELECT upto, engine FROM snapshots ORDER BY upto DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| self.err(e))?;
        let after = snapshot.as_ref().map_or(0, |s| s.0);
        let mut stmt = self.conn.prepare("SELECT seq, payload FROM events WHERE seq > ?1 ORDER BY seq").map_err(|e| self.err(e))?;
        let replay = stmt
            .query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        let mut stmt = self.conn.prepare("SELECT reason, count FROM rejects").map_err(|e| self.err(e))?;
        let rejects = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(Loaded { orders, snapshot, replay, rejects })
    }

    /// Starts a transaction for one batch; nothing is visible or durable until [`Batch::commit`].
    pub fn batch(&mut self) -> Result<Batch<'_>, StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|source| StoreError::Sql { path: path.clone(), source })?;
        Ok(Batch { tx, path })
    }

    /// Events in the log (for tests and reports).
    pub fn event_count(&self) -> Result<i64, StoreError> {
        self.conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    pub fn order_events(&self, order: u64) -> Result<Vec<OrderEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT order_id, at, actor, action, from_state, to_state, level, reason FROM order_events WHERE order_id = ?1 ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([order as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let corrupt = |d: String| StoreError::Corrupt { path: self.path.clone(), detail: d };
        let mut out = Vec::new();
        for row in rows {
            let (order, at, actor, action, from, to, level, reason) = row.map_err(|e| self.err(e))?;
            out.push(OrderEvent {
                order: order as u64,
                at,
                actor,
                action,
                from: from.as_deref().map(unname).transpose().map_err(|e| corrupt(e.to_string()))?,
                to: unname(&to).map_err(|e| corrupt(e.to_string()))?,
                level: unname(&level).map_err(|e| corrupt(e.to_string()))?,
                reason,
            });
        }
        Ok(out)
    }
}

/// One batch's writes, in one transaction.
pub struct Batch<'a> {
    tx: rusqlite::Transaction<'a>,
    path: String,
}

impl Batch<'_> {
    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sql { path: self.path.clone(), source }
    }

    /// Appends an input event; returns its sequence, or `None` when its id was seen before.
    pub fn append_event(&self, id: &str, time: i64, payload: &[u8]) -> Result<Option<i64>, StoreError> {
        let mut stmt = self.tx.prepare_cached("INSERT OR IGNORE INTO events (id, time, payload) VALUES (?1, ?2, ?3)").map_err(|e| self.err(e))?;
        let n = stmt.execute(params![id, time, payload]).map_err(|e| self.err(e))?;
        Ok((n == 1).then(|| self.tx.last_insert_rowid()))
    }

    pub fn put_order(&self, o: &Order) -> Result<(), StoreError> {
        let body = serde_json::to_string(o).map_err(|e| StoreError::Corrupt { path: self.path.clone(), detail: e.to_string() })?;
        let mut stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO orders (id, rule, key, area, state, level, created_at, updated_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state, level = excluded.level, updated_at = excluded.updated_at, body = excluded.body",
            )
            .map_err(|e| self.err(e))?;
        stmt.execute(params![o.id as i64, o.rule, o.key, o.area, o.state.as_str(), format!("{:?}", o.level), o.created_at, o.updated_at, body])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn append_order_event(&self, e: &OrderEvent) -> Result<(), StoreError> {
        let mut stmt = self
            .tx
            .prepare_cached("INSERT INTO order_events (order_id, at, actor, action, from_state, to_state, level, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
            .map_err(|e| self.err(e))?;
        stmt.execute(params![e.order as i64, e.at, e.actor, e.action, e.from.as_ref().map(name), name(&e.to), name(&e.level), e.reason])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn count_reject(&self, reason: &str) -> Result<(), StoreError> {
        self.tx
            .execute("INSERT INTO rejects (reason, count) VALUES (?1, 1) ON CONFLICT(reason) DO UPDATE SET count = count + 1", [reason])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn snapshot(&self, upto: i64, engine_json: &str) -> Result<(), StoreError> {
        self.tx.execute("INSERT OR REPLACE INTO snapshots (upto, engine) VALUES (?1, ?2)", params![upto, engine_json]).map_err(|e| self.err(e))?;
        self.tx.execute("DELETE FROM snapshots WHERE upto < ?1", [upto]).map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn commit(self) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.tx.commit().map_err(|source| StoreError::Sql { path, source })
    }
}

/// A unit enum's serde name, as stored.
fn name<T: serde::Serialize>(t: &T) -> String {
    serde_json::to_value(t).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// A unit enum from its stored serde name.
fn unname<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
}
