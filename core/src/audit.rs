//! The audit log: every work-order transition (the core's automatic decisions and people's actions), every
//! refused API action (outside the caller's scope, or illegal in the order's state) and every token issued,
//! with who, scope, what, on what, when and the outcome.
//!
//! It lives in the core's SQLite store, in the same transaction as the change it records, so an entry
//! exists exactly when its change does. It is append-only twice over: triggers refuse `UPDATE` and `DELETE`
//! on the table, and each entry carries the BLAKE3 hash of its contents and of the entry before it, so that
//! anyone who goes around the triggers (another SQLite client, a hex editor) leaves a chain that
//! [`verify`] finds broken at the first entry changed, removed or inserted. A cut at the end leaves a valid
//! shorter chain: it is detected against a head recorded elsewhere (`verify(.., Some(head))`; the head is
//! what `towntwin core audit verify` prints).
//!
//! `at` is the core's event time; `recorded_at` the wall clock (Unix milliseconds) when the entry was
//! written, for the auditor. The wall clock is recorded here and decides nothing.

use rusqlite::{Connection, OptionalExtension, params};

use crate::time::Millis;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, recorded_at INTEGER NOT NULL, actor TEXT NOT NULL,
    scope TEXT NOT NULL, what TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// The `prev` of the first entry.
pub const GENESIS: &str = "genesis";

/// The scope of the core's own decisions (actor `system`: opening and dispatching an order; actor
/// `policy`: escalating it at a deadline).
pub const SYSTEM: &str = "system";

/// One entry, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Event time.
    pub at: Millis,
    /// A principal (`committee:C05/wang`), `system`, or the command that acted (`cli`).
    pub actor: String,
    /// The actor's scope (`committee:C05`), `system` for the core's own decisions.
    pub scope: String,
    /// `create`, `accept`, `escalate`, ..., `token.issue`.
    pub what: String,
    /// `order 123`, or the principal a token was issued for.
    pub target: String,
    /// `created -> accepted (small)`, `refused 403: ...`, `issued`.
    pub outcome: String,
}

impl Entry {
    /// The scope part of an actor (`committee:C05/wang` -> `committee:C05`).
    pub fn scope_of(actor: &str) -> String {
        actor.split('/').next().unwrap_or(actor).to_string()
    }
}

/// An entry as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: i64,
    pub recorded_at: i64,
    pub entry: Entry,
    pub prev: String,
    pub hash: String,
}

/// The hash of an entry at `seq` after `prev`: every field, length-prefixed, so no two entries share an
/// encoding.
pub fn chain_hash(seq: i64, recorded_at: i64, e: &Entry, prev: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"towntwin-audit-1\n");
    h.update(&seq.to_le_bytes());
    h.update(&recorded_at.to_le_bytes());
    h.update(&e.at.to_le_bytes());
    for field in [e.actor.as_str(), &e.scope, &e.what, &e.target, &e.outcome, prev] {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Appends `e` after the current head. Call inside the write transaction of the change it records (the
/// store's batches are `IMMEDIATE`, so no other writer can append between the read of the head and the
/// insert). Returns the new head.
pub fn append(conn: &Connection, e: &Entry) -> rusqlite::Result<String> {
    let last: Option<(i64, String)> =
        conn.prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
    let next = Next::after(last, e);
    conn.prepare_cached(
        "INSERT INTO audit (seq, at, recorded_at, actor, scope, what, target, outcome, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![next.seq, e.at, next.recorded_at, e.actor, e.scope, e.what, e.target, e.outcome, next.prev, next.hash])?;
    Ok(next.hash)
}

/// The chain's fields of the entry that follows `last` (the head's sequence and hash; `None` for an empty
/// log): what either store writes beside the entry.
#[derive(Debug, Clone)]
pub struct Next {
    pub seq: i64,
    pub recorded_at: i64,
    pub prev: String,
    pub hash: String,
}

impl Next {
    pub fn after(last: Option<(i64, String)>, e: &Entry) -> Next {
        let (last, prev) = last.unwrap_or((0, GENESIS.to_string()));
        let seq = last + 1;
        let recorded_at = crate::auth::wall_ms();
        let hash = chain_hash(seq, recorded_at, e, &prev);
        Next { seq, recorded_at, prev, hash }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub head: String,
}

/// Where a chain breaks, and how.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("audit entry {seq}: its contents do not match its hash (changed after it was written)")]
    Changed { seq: i64 },
    #[error("audit entry {seq}: it does not follow entry {expected_prev_seq} (an entry before it was removed, changed or inserted)")]
    Unlinked { seq: i64, expected_prev_seq: i64 },
    #[error("audit entries {from}..={to} are missing (removed)")]
    Missing { from: i64, to: i64 },
    #[error("the audit log does not contain the head {head} recorded earlier: it was cut or rewritten (it now ends at entry {last} with {now})")]
    HeadNotFound { head: String, last: i64, now: String },
    #[error("reading the audit log: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("reading the audit log: {0}")]
    Read(String),
}

pub(crate) const SELECT_ALL: &str = "SELECT seq, at, recorded_at, actor, scope, what, target, outcome, prev, hash FROM audit ORDER BY seq";

/// A row of [`SELECT_ALL`].
fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        seq: r.get(0)?,
        entry: Entry { at: r.get(1)?, actor: r.get(3)?, scope: r.get(4)?, what: r.get(5)?, target: r.get(6)?, outcome: r.get(7)? },
        recorded_at: r.get(2)?,
        prev: r.get(8)?,
        hash: r.get(9)?,
    })
}

/// Every entry, in order.
pub fn entries(conn: &Connection) -> rusqlite::Result<Vec<Stored>> {
    conn.prepare(SELECT_ALL)?.query_map([], stored)?.collect()
}

/// Walks the chain from its first entry: every entry must be numbered after the one before, name that
/// one's hash as `prev`, and hash to its own `hash`. With `head`, the chain must also contain that hash (a
/// head recorded earlier, so a cut at the end is found too).
pub fn verify(conn: &Connection, head: Option<&str>) -> Result<Verified, Broken> {
    let mut stmt = conn.prepare(SELECT_ALL)?;
    let rows = stmt.query_map([], stored)?.map(|r| r.map_err(Broken::from));
    verify_rows(rows, head)
}

/// [`verify`] over the entries as read, in order of their sequence (from either store).
pub fn verify_rows(rows: impl IntoIterator<Item = Result<Stored, Broken>>, head: Option<&str>) -> Result<Verified, Broken> {
    let (mut last_seq, mut last_hash) = (0i64, GENESIS.to_string());
    let mut head_seen = head.is_none();
    let mut n = 0u64;
    for r in rows {
        let Stored { seq, recorded_at, entry: e, prev, hash } = r?;
        if seq > last_seq + 1 && prev == last_hash {
            // Renumbered to close a gap is caught by the hash (seq is hashed); a plain gap is a removal.
            return Err(Broken::Changed { seq });
        }
        if seq != last_seq + 1 {
            return Err(Broken::Missing { from: last_seq + 1, to: seq - 1 });
        }
        if prev != last_hash {
            return Err(Broken::Unlinked { seq, expected_prev_seq: last_seq });
        }
        if chain_hash(seq, recorded_at, &e, &prev) != hash {
            return Err(Broken::Changed { seq });
        }
        if head == Some(hash.as_str()) {
            head_seen = true;
        }
        (last_seq, last_hash) = (seq, hash);
        n += 1;
    }
    match head {
        Some(h) if !head_seen => Err(Broken::HeadNotFound { head: h.to_string(), last: last_seq, now: last_hash }),
        _ => Ok(Verified { entries: n, head: last_hash }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: i64) -> Entry {
        Entry {
            at: i * 1000,
            actor: format!("committee:C0{}/a", i % 9),
            scope: format!("committee:C0{}", i % 9),
            what: "accept".into(),
            target: format!("order {i}"),
            outcome: "dispatched -> accepted (small)".into(),
        }
    }

    fn log(n: i64) -> (Connection, Verified) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        for i in 1..=n {
            append(&conn, &entry(i)).unwrap();
        }
        let v = verify(&conn, None).unwrap();
        (conn, v)
    }

    fn unlock(conn: &Connection) {
        conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;").unwrap();
    }

    #[test]
    fn an_untouched_chain_verifies_with_its_head() {
        let (conn, v) = log(20);
        assert_eq!(v.entries, 20);
        assert_eq!(verify(&conn, Some(&v.head)).unwrap(), v);
        assert_eq!(entries(&conn).unwrap().len(), 20);
    }

    #[test]
    fn triggers_refuse_update_and_delete() {
        let (conn, _) = log(3);
        assert!(conn.execute("UPDATE audit SET outcome = 'x' WHERE seq = 2", []).is_err());
        assert!(conn.execute("DELETE FROM audit WHERE seq = 2", []).is_err());
    }

    #[test]
    fn a_changed_entry_is_found() {
        let (conn, _) = log(10);
        unlock(&conn);
        conn.execute("UPDATE audit SET outcome = 'refused' WHERE seq = 4", []).unwrap();
        assert!(matches!(verify(&conn, None), Err(Broken::Changed { seq: 4 })));
    }

    #[test]
    fn a_changed_and_rehashed_entry_breaks_the_link_after_it() {
        let (conn, _) = log(10);
        unlock(&conn);
        let e = Entry { outcome: "refused".into(), ..entry(4) };
        let prev: String = conn.query_row("SELECT prev FROM audit WHERE seq = 4", [], |r| r.get(0)).unwrap();
        let rec: i64 = conn.query_row("SELECT recorded_at FROM audit WHERE seq = 4", [], |r| r.get(0)).unwrap();
        conn.execute("UPDATE audit SET outcome = 'refused', hash = ?1 WHERE seq = 4", [chain_hash(4, rec, &e, &prev)]).unwrap();
        assert!(matches!(verify(&conn, None), Err(Broken::Unlinked { seq: 5, expected_prev_seq: 4 })));
    }

    #[test]
    fn a_removed_entry_is_found() {
        let (conn, _) = log(10);
        unlock(&conn);
        conn.execute("DELETE FROM audit WHERE seq = 6", []).unwrap();
        assert!(matches!(verify(&conn, None), Err(Broken::Missing { from: 6, to: 6 })));
        conn.execute("DELETE FROM audit WHERE seq = 1", []).unwrap();
        assert!(matches!(verify(&conn, None), Err(Broken::Missing { from: 1, to: 1 })));
    }

    #[test]
    fn a_cut_at_the_end_is_found_against_a_recorded_head() {
        let (conn, v) = log(10);
        unlock(&conn);
        conn.execute("DELETE FROM audit WHERE seq >= 9", []).unwrap();
        let shorter = verify(&conn, None).unwrap();
        assert_eq!(shorter.entries, 8);
        assert!(matches!(verify(&conn, Some(&v.head)), Err(Broken::HeadNotFound { last: 8, .. })));
    }
}
