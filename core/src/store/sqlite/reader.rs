//! [`Reader`]: the store as others read it. The one place outside the writer that knows the core's tables:
//! the load test's accounting, the after-action report, the command line and the tests read a store
//! through it, read-only, beside a running core (WAL lets a reader in while the core writes).

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::wait_when_busy;
use crate::orders::{Order, OrderEvent};
use crate::store::StoreError;

/// A read-only connection to a core's store. Opening it never creates or changes a store.
pub struct Reader {
    conn: Connection,
    path: String,
}

impl Reader {
    /// Opens the store at `path` for reading; a missing file is an error, not an empty store.
    pub fn open(path: &Path) -> Result<Reader, StoreError> {
        let p = path.display().to_string();
        let sql = |source| StoreError::Sql { path: p.clone(), source };
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(sql)?;
        wait_when_busy(&conn).map_err(sql)?;
        Ok(Reader { conn, path: p })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sql { path: self.path.clone(), source }
    }

    /// The sequence of the last event logged (0 for none): how many events the core has accepted.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        self.conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(|e| self.err(e))
    }

    /// Events in the log.
    pub fn event_count(&self) -> Result<u64, StoreError> {
        self.conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(|e| self.err(e))
    }

    /// The ids of the logged events, in the order they were logged.
    pub fn event_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT id FROM events ORDER BY seq").map_err(|e| self.err(e))?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(|e| self.err(e))?.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
        Ok(ids)
    }

    /// Every work order as it stands, in id order.
    pub fn orders(&self) -> Result<Vec<Order>, StoreError> {
        orders(&self.conn, &self.path)
    }

    /// Every transition of every order, in the order they were appended.
    pub fn history(&self) -> Result<Vec<OrderEvent>, StoreError> {
        transitions(&self.conn, &self.path, None)
    }

    /// One order's transitions, in the order they were appended.
    pub fn order_events(&self, order: u64) -> Result<Vec<OrderEvent>, StoreError> {
        transitions(&self.conn, &self.path, Some(order))
    }

    /// Messages the core refused, by reason.
    pub fn rejects(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT reason, count FROM rejects").map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Messages refused for `reason` (0 when none were).
    pub fn rejected(&self, reason: &str) -> Result<u64, StoreError> {
        let n = self.conn.query_row("SELECT count FROM rejects WHERE reason = ?1", [reason], |r| r.get::<_, i64>(0)).optional().map_err(|e| self.err(e))?;
        Ok(n.unwrap_or(0) as u64)
    }

    /// The API tokens issued, as kept: (hash of the token, principal), in the order of their hashes.
    pub fn tokens(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT hash, principal FROM tokens ORDER BY hash").map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The audit log's entries in order.
    pub fn audit_entries(&self) -> Result<Vec<crate::audit::Stored>, StoreError> {
        crate::audit::entries(&self.conn).map_err(|e| self.err(e))
    }

    /// The audit log's chain, checked (see [`crate::audit::verify`]).
    pub fn verify_audit(&self, head: Option<&str>) -> Result<crate::audit::Verified, crate::audit::Broken> {
        crate::audit::verify(&self.conn, head)
    }
}

/// Every order's body, parsed, in id order.
pub(super) fn orders(conn: &Connection, path: &str) -> Result<Vec<Order>, StoreError> {
    let sql = |source| StoreError::Sql { path: path.to_string(), source };
    let mut stmt = conn.prepare("SELECT body FROM orders ORDER BY id").map_err(sql)?;
    let bodies: Vec<String> = stmt.query_map([], |r| r.get(0)).map_err(sql)?.collect::<Result<_, _>>().map_err(sql)?;
    bodies.iter().map(|b| serde_json::from_str::<Order>(b).map_err(|e| StoreError::Corrupt { path: path.to_string(), detail: e.to_string() })).collect()
}

/// The transitions of one order, or of all, in the order they were appended.
pub(super) fn transitions(conn: &Connection, path: &str, order: Option<u64>) -> Result<Vec<OrderEvent>, StoreError> {
    let sql = |source| StoreError::Sql { path: path.to_string(), source };
    const COLUMNS: &str = "SELECT order_id, at, actor, action, from_state, to_state, level, reason FROM order_events";
    let query = match order {
        Some(_) => format!("{COLUMNS} WHERE order_id = ?1 ORDER BY seq"),
        None => format!("{COLUMNS} ORDER BY seq"),
    };
    let mut stmt = conn.prepare(&query).map_err(sql)?;
    let row = |r: &rusqlite::Row<'_>| {
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
    };
    let rows = match order {
        Some(o) => stmt.query_map([o as i64], row),
        None => stmt.query_map([], row),
    }
    .map_err(sql)?;
    rows.map(|r| crate::store::transition(r.map_err(sql)?, path)).collect()
}
