//! API tokens: who a caller is. A token is 32 random bytes (hex), issued for one principal with
//! `towntwin core token issue --principal committee:C05` (or [`crate::service::Core::issue_token`]) and
//! kept only as its BLAKE3 hash, so the store does not hold anything a caller could present. The API takes
//! `Authorization: Bearer <token>` and acts as the token's principal; an `X-Principal` header proves nothing
//! and is ignored.
//!
//! Tokens are secrets, not simulation: they come from the operating system's generator, never from the
//! run's seed.

use std::path::Path;

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

pub const TOKENS_TABLE: &str = "CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, principal TEXT NOT NULL);";

/// Issues a token for `principal` into the store at `db` (created if need be), beside a core that may be
/// running on it; returns the token, which is shown once and never stored.
/// The token is recorded in the audit log with `at` = the newest logged event's time (0 in a new store).
pub fn issue_into(db: &Path, principal: &crate::principal::Principal) -> Result<String, rusqlite::Error> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(TOKENS_TABLE)?;
    conn.execute_batch(crate::audit::SCHEMA)?;
    // The newest event's time, read by its key before the write lock is taken (a scan of the event log,
    // hundreds of megabytes, under the lock would keep the running core from committing).
    let has_events: bool = conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'", [], |r| r.get::<_, i64>(0))? > 0;
    let at: i64 = if has_events { conn.query_row("SELECT COALESCE((SELECT time FROM events ORDER BY seq DESC LIMIT 1), 0)", [], |r| r.get(0))? } else { 0 };
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let token = new_token();
    tx.execute("INSERT INTO tokens (hash, principal) VALUES (?1, ?2)", rusqlite::params![hash(&token), principal.to_string()])?;
    crate::audit::append(&tx, &issue_entry(at, "cli", principal))?;
    tx.commit()?;
    Ok(token)
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
