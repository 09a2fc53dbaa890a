//! The store's writes as statements on a connection, inside a transaction its caller holds: run by a
//! [`super::Batch`] on the store's own connection, or by the write-behind thread ([`super::behind`]) on its.

use rusqlite::{Connection, params};

use crate::orders::{Order, OrderEvent};

use super::super::name;

/// Appends an input event at `seq` (the next sequence), or at the next rowid when `None`; returns its
/// sequence.
pub(super) fn event(conn: &Connection, seq: Option<i64>, id: &str, time: i64, payload: &[u8]) -> rusqlite::Result<i64> {
    let mut stmt = conn.prepare_cached("INSERT INTO events (seq, id, time, payload) VALUES (?1, ?2, ?3, ?4)")?;
    stmt.execute(params![seq, id, time, payload])?;
    Ok(conn.last_insert_rowid())
}

/// Appends events at the sequences given, one prepared statement run for each.
pub(super) fn events<'e>(conn: &Connection, events: impl Iterator<Item = (i64, &'e str, i64, &'e [u8])>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached("INSERT INTO events (seq, id, time, payload) VALUES (?1, ?2, ?3, ?4)")?;
    for (seq, id, time, payload) in events {
        stmt.execute(params![seq, id, time, payload])?;
    }
    Ok(())
}

/// The stored id of the event at `seq`.
pub(super) fn event_id(conn: &Connection, seq: i64) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT id FROM events WHERE seq = ?1")?.query_row([seq], |r| r.get(0)).optional()
}

/// Inserts or updates an order's row (its state, level and body).
pub(super) fn order(conn: &Connection, o: &Order) -> Result<(), String> {
    let body = serde_json::to_string(o).map_err(|e| format!("order {} cannot be written: {e}", o.id))?;
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO orders (id, rule, key, area, state, level, created_at, updated_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(id) DO UPDATE SET state = excluded.state, level = excluded.level, updated_at = excluded.updated_at, body = excluded.body",
        )
        .map_err(|e| e.to_string())?;
    stmt.execute(params![o.id as i64, o.rule, o.key, o.area, o.state.as_str(), format!("{:?}", o.level), o.created_at, o.updated_at, body])
        .map_err(|e| e.to_string())?;
    Ok(())
}

pub(super) fn order_event(conn: &Connection, e: &OrderEvent) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO order_events (order_id, at, actor, action, from_state, to_state, level, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    stmt.execute(params![e.order as i64, e.at, e.actor, e.action, e.from.as_ref().map(name), name(&e.to), name(&e.level), e.reason])?;
    Ok(())
}

pub(super) fn blind_span(conn: &Connection, from: i64, until: Option<i64>) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO blind_spans (from_ms, until_ms) VALUES (?1, ?2) ON CONFLICT(from_ms) DO UPDATE SET until_ms = excluded.until_ms")?
        .execute(params![from, until])?;
    Ok(())
}

pub(super) fn qos0_seen(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('qos0_seen', 1)")?.execute([])?;
    Ok(())
}

pub(super) fn reject(conn: &Connection, reason: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO rejects (reason, count) VALUES (?1, 1) ON CONFLICT(reason) DO UPDATE SET count = count + 1")?.execute([reason])?;
    Ok(())
}
