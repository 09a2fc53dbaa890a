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
pub fn issue_into(db: &Path, principal: &crate::principal::Principal) -> Result<String, rusqlite::Error> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(TOKENS_TABLE)?;
    let token = new_token();
    conn.execute("INSERT INTO tokens (hash, principal) VALUES (?1, ?2)", rusqlite::params![hash(&token), principal.to_string()])?;
    Ok(token)
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
