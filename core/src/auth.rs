//! API tokens: who a caller is. A token is 32 random bytes (hex), issued for one principal with
//! `towntwin core token issue --principal committee:C05` (or [`crate::service::Core::issue_token`]) and
//! kept only as its BLAKE3 hash, so the store does not hold anything a caller could present. The API takes
//! `Authorization: Bearer <token>` and acts as the token's principal; an `X-Principal` header proves nothing
//! and is ignored.
//!
//! Tokens are secrets, not simulation: they come from the operating system's generator, never from the
//! run's seed.

use rand::RngCore as _;

/// A fresh token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the store keeps of a token.
pub fn hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// The tokens table of a SQLite store. `expires_at` and `revoked_at` are wall-clock Unix milliseconds
/// (security, not simulation: the run's event time decides no token).
const TOKENS_TABLE: &str = "CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, principal TEXT NOT NULL, expires_at INTEGER, revoked_at INTEGER);";

/// Makes the tokens table of a SQLite store, or brings one made before tokens expired up to date.
pub fn tokens_table(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch(TOKENS_TABLE)?;
    migrate_tokens(conn)
}

/// Adds `expires_at` and `revoked_at` to a SQLite store's tokens table made before tokens expired.
fn migrate_tokens(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('tokens')")?;
    let columns: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for column in ["expires_at", "revoked_at"] {
        if !columns.iter().any(|c| c == column) {
            conn.execute_batch(&format!("ALTER TABLE tokens ADD COLUMN {column} INTEGER"))?;
        }
    }
    Ok(())
}

/// Now, on the wall clock, in Unix milliseconds: when tokens expire and are revoked.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Which tokens to revoke.
#[derive(Debug, Clone)]
pub enum Revoke {
    /// The one presented (kept as its hash).
    Token(String),
    /// Every token of this principal.
    Principal(String),
}

/// Revokes tokens in the store at `at` (a core may be running on it: its next request with one is 401);
/// each revoked token is audited. Returns the principals of the tokens revoked (none: nothing matched a
/// token still valid).
pub fn revoke(at: &crate::store::Location, which: &Revoke) -> Result<Vec<String>, crate::store::StoreError> {
    let (column, value) = match which {
        Revoke::Token(t) => ("hash", hash(t)),
        Revoke::Principal(p) => ("principal", p.clone()),
    };
    match at {
        crate::store::Location::Sqlite(db) => {
            revoke_sqlite(db, column, &value).map_err(|source| crate::store::StoreError::Sql { path: db.display().to_string(), source })
        }
        crate::store::Location::Postgres(url) => crate::store::postgres::revoke_tokens(url, column, &value, revoke_entry),
    }
}

fn revoke_sqlite(db: &std::path::Path, column: &str, value: &str) -> Result<Vec<String>, rusqlite::Error> {
    let mut conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    migrate_tokens(&conn)?;
    let at = newest_event_time(&conn)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = wall_ms();
    let principals: Vec<String> = {
        let mut stmt = tx.prepare(&format!("UPDATE tokens SET revoked_at = ?1 WHERE {column} = ?2 AND revoked_at IS NULL RETURNING principal"))?;
        stmt.query_map(rusqlite::params![now, value], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    for p in &principals {
        crate::audit::append(&tx, &revoke_entry(at, p))?;
    }
    tx.commit()?;
    Ok(principals)
}

/// The newest logged event's time (0 in a store without events), which stamps what the command line
/// audits. Read by its key before the write lock is taken: a scan of the event log, hundreds of megabytes,
/// under the lock would keep the running core from committing.
fn newest_event_time(conn: &rusqlite::Connection) -> rusqlite::Result<i64> {
    let has_events: bool = conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'", [], |r| r.get::<_, i64>(0))? > 0;
    if !has_events {
        return Ok(0);
    }
    conn.query_row("SELECT COALESCE((SELECT time FROM events ORDER BY seq DESC LIMIT 1), 0)", [], |r| r.get(0))
}

/// The audit entry of a token revoked from the command line.
pub fn revoke_entry(at: crate::time::Millis, principal: &str) -> crate::audit::Entry {
    crate::audit::Entry {
        at,
        actor: "cli".to_string(),
        scope: "admin".to_string(),
        what: "token.revoke".to_string(),
        target: principal.to_string(),
        outcome: "revoked".to_string(),
    }
}

/// Issues a token for `principal` into the store at `at` (created if need be), beside a core that may be
/// running on it; returns the token, which is shown once and never stored.
/// The token is recorded in the audit log with `at` = the newest logged event's time (0 in a new store).
/// `expires_at` (wall-clock Unix milliseconds): after it the token is refused (401); `None`: never.
pub fn issue_into(at: &crate::store::Location, principal: &crate::principal::Principal, expires_at: Option<i64>) -> Result<String, crate::store::StoreError> {
    let token = new_token();
    match at {
        crate::store::Location::Sqlite(db) => issue_into_sqlite(db, &hash(&token), principal, expires_at)
            .map_err(|source| crate::store::StoreError::Sql { path: db.display().to_string(), source })?,
        crate::store::Location::Postgres(url) => {
            let p = principal.clone();
            crate::store::postgres::issue_token(url, &hash(&token), &principal.to_string(), expires_at, move |t| issue_entry(t, "cli", &p))?
        }
    }
    Ok(token)
}

fn issue_into_sqlite(db: &std::path::Path, hash: &str, principal: &crate::principal::Principal, expires_at: Option<i64>) -> Result<(), rusqlite::Error> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    tokens_table(&conn)?;
    conn.execute_batch(crate::audit::SCHEMA)?;
    let at = newest_event_time(&conn)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute("INSERT INTO tokens (hash, principal, expires_at) VALUES (?1, ?2, ?3)", rusqlite::params![hash, principal.to_string(), expires_at])?;
    crate::audit::append(&tx, &issue_entry(at, "cli", principal))?;
    tx.commit()
}

/// The audit entry of a token issued by `by` (`cli`: `towntwin core token issue`; `core`: the core itself).
pub fn issue_entry(at: crate::time::Millis, by: &str, principal: &crate::principal::Principal) -> crate::audit::Entry {
    crate::audit::Entry {
        at,
        actor: by.to_string(),
        scope: "admin".to_string(),
        what: "token.issue".to_string(),
        target: principal.to_string(),
        outcome: "issued".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_kept_only_as_hashes() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(hash(&a), a);
        assert_eq!(hash(&a), hash(&a));
    }
}
