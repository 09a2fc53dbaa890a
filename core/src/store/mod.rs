//! The durable store: an append-only log of every accepted input event (the engine's state is a pure
//! function of it), the work orders' current state, their append-only transition log, the hash-chained
//! audit log, the API's tokens, and periodic snapshots of the engine so a restart replays only the events
//! after the last one.
//!
//! Two stores hold the same tables with the same promises (a batch's events, orders, transitions and audit
//! entries in one transaction, committed before the broker is acknowledged; an event's id logged once):
//! - [`sqlite`], a file in WAL mode: the embedded default, one town on one machine;
//! - [`postgres`], a schema of a PostgreSQL database (`postgres://...?schema=town`): several towns' cores
//!   on several machines, read together by a district. Each town's writer holds an advisory lock on its
//!   schema, so that two cores never write one town.
//!
//! [`Location`] names either; [`Store`] is the writer (the core), [`Reader`] what everyone else reads a
//! store through.

use std::path::{Path, PathBuf};

use crate::orders::{Order, OrderEvent};

mod ids;
pub mod postgres;
pub mod sqlite;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sql { path: String, source: rusqlite::Error },
    #[error("store {path}: writing behind stopped: {detail}")]
    Behind { path: String, detail: String },
    #[error("store {path}: corrupt row: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("store {at}: {detail}")]
    Postgres { at: String, detail: String },
    #[error("store {at}: another core holds this town's store (its advisory lock {key} is taken); stop it, or start this one as its standby")]
    Held { at: String, key: i64 },
    #[error("store {at}: no such store (nothing was ever written there)")]
    Missing { at: String },
    #[error("store {at}: {what} is not available in this store")]
    Unsupported { at: String, what: &'static str },
}

/// Where a store is: a SQLite file, or a schema of a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(postgres::Url),
}

impl Location {
    /// Whether this is a SQLite file.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }

    /// Whether there is a store here to read (a SQLite file exists; a PostgreSQL schema is asked for on
    /// opening).
    pub fn may_exist(&self) -> bool {
        match self {
            Location::Sqlite(p) => p.is_file(),
            Location::Postgres(_) => true,
        }
    }
}

impl std::str::FromStr for Location {
    type Err = String;

    /// `postgres://...` or `postgresql://...` is a PostgreSQL schema; anything else a SQLite file's path.
    fn from_str(s: &str) -> Result<Location, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return s.parse().map(Location::Postgres);
        }
        if s.contains("://") {
            return Err(format!("{s}: a store is a SQLite file's path or a postgres:// URL"));
        }
        if s.is_empty() {
            return Err("an empty store path".into());
        }
        Ok(Location::Sqlite(PathBuf::from(s)))
    }
}

impl std::fmt::Display for Location {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(u) => write!(f, "{u}"),
        }
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Location {
        Location::Sqlite(p)
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Location {
        Location::Sqlite(p.clone())
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Location {
        Location::Sqlite(p.to_path_buf())
    }
}

impl From<&Location> for Location {
    fn from(l: &Location) -> Location {
        l.clone()
    }
}

/// What a restart loads.
pub struct Loaded {
    pub orders: Vec<Order>,
    /// The latest engine snapshot (encoded by the service) and the last event sequence it includes.
    pub snapshot: Option<(i64, Vec<u8>)>,
    /// Events after the snapshot, in commit order: (seq, payload).
    pub replay: Vec<(i64, Vec<u8>)>,
    pub rejects: Vec<(String, u64)>,
    /// When the core was not listening (see [`crate::rules::Engine::blind`]).
    pub blind: Vec<(i64, Option<i64>)>,
    /// Whether a message ever came at QoS 0.
    pub qos0_seen: bool,
}

/// Makes an engine snapshot's bytes (run on the snapshot thread).
pub type SnapshotJob = Box<dyn FnOnce() -> Result<Vec<u8>, String> + Send>;

/// The core's store, the one writer of a town's tables.
pub enum Store {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

/// One batch's writes, in one transaction: nothing is visible or durable until [`Batch::commit`]; dropped
/// without it, nothing of it was written (its event ids included).
pub enum Batch<'a> {
    Sqlite(sqlite::Batch<'a>),
    Postgres(Box<postgres::Batch<'a>>),
}

/// Calls the same method on either store.
macro_rules! either {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Self::Sqlite($s) => $e,
            Self::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens (creating if need be) the store at `at`, as its one writer.
    pub fn open(at: impl Into<Location>) -> Result<Store, StoreError> {
        match at.into() {
            Location::Sqlite(p) => sqlite::Store::open(&p).map(Store::Sqlite),
            Location::Postgres(u) => postgres::Store::open(&u).map(Store::Postgres),
        }
    }

    /// Opens the store at `at` as a standby writer: waits (see [`postgres::Store::open_when_free`]) while
    /// another core holds the town. Only a PostgreSQL store has a lock to wait on.
    pub fn open_standby(at: &Location, patience: Option<std::time::Duration>) -> Result<Store, StoreError> {
        match at {
            Location::Postgres(u) => postgres::Store::open_when_free(u, std::time::Duration::from_millis(200), patience).map(Store::Postgres),
            Location::Sqlite(p) => {
                Err(StoreError::Unsupported { at: p.display().to_string(), what: "a standby core (it needs a PostgreSQL store, whose lock it waits on)" })
            }
        }
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        either!(self, s => s.load())
    }

    /// Keeps a token's hash for `principal`, with its audit entry (committed at once).
    pub fn put_token(&mut self, hash: &str, principal: &str, audit: &crate::audit::Entry) -> Result<(), StoreError> {
        either!(self, s => s.put_token(hash, principal, audit))
    }

    /// The principal a token's hash was issued for (tokens issued by another process included).
    pub fn token(&self, hash: &str) -> Result<Option<String>, StoreError> {
        either!(self, s => s.token(hash))
    }

    /// Writes an engine snapshot covering the log up to `upto` (committed), off the ingest path where the
    /// store can.
    pub fn snapshot(&self, upto: i64, make: SnapshotJob) -> Result<(), StoreError> {
        either!(self, s => s.snapshot(upto, make))
    }

    /// Whether the store takes writes now (for the readiness probe): SQLite takes its write lock and lets go;
    /// PostgreSQL answers and is not a read-only replica.
    pub fn probe(&self) -> Result<(), StoreError> {
        either!(self, s => s.probe())
    }

    /// Starts a transaction for one batch.
    pub fn batch(&mut self) -> Result<Batch<'_>, StoreError> {
        match self {
            Store::Sqlite(s) => s.batch().map(Batch::Sqlite),
            Store::Postgres(s) => s.batch().map(|b| Batch::Postgres(Box::new(b))),
        }
    }

    /// Hands the writes of every later batch to a thread of the store's, committed every `group` batches
    /// (see [`sqlite::Store::write_behind`]); a PostgreSQL store writes each batch itself whatever this says.
    pub fn write_behind(&mut self, group: u32) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.write_behind(group),
            Store::Postgres(_) => Ok(()),
        }
    }

    /// Waits until the batches handed to the write-behind thread are committed (see [`Store::write_behind`]).
    pub fn sync_writes(&mut self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.sync_writes(),
            Store::Postgres(_) => Ok(()),
        }
    }

    /// Caps a SQLite store at `extra` more pages than it has now: from there every write fails as a full disk
    /// does. For fault tests; returns the cap.
    pub fn limit_pages(&self, extra: i64) -> Result<i64, StoreError> {
        match self {
            Store::Sqlite(s) => s.limit_pages(extra),
            Store::Postgres(s) => Err(StoreError::Unsupported { at: s.at(), what: "a page limit" }),
        }
    }

    /// The audit log's chain, checked (see [`crate::audit::verify`]).
    pub fn verify_audit(&self, head: Option<&str>) -> Result<crate::audit::Verified, crate::audit::Broken> {
        either!(self, s => s.verify_audit(head))
    }

    /// The audit log's entries in order.
    pub fn audit_entries(&self) -> Result<Vec<crate::audit::Stored>, StoreError> {
        either!(self, s => s.audit_entries())
    }

    /// Events in the log.
    pub fn event_count(&self) -> Result<i64, StoreError> {
        either!(self, s => s.event_count())
    }

    /// One order's transitions, in the order they were appended.
    pub fn order_events(&self, order: u64) -> Result<Vec<OrderEvent>, StoreError> {
        either!(self, s => s.order_events(order))
    }
}

impl Batch<'_> {
    /// Appends an input event; returns its sequence, or `None` when its id was logged before.
    pub fn append_event(&mut self, id: &str, time: i64, payload: &[u8]) -> Result<Option<i64>, StoreError> {
        either!(self, b => b.append_event(id, time, payload))
    }

    pub fn put_order(&self, o: &Order) -> Result<(), StoreError> {
        either!(self, b => b.put_order(o))
    }

    pub fn append_order_event(&self, e: &OrderEvent) -> Result<(), StoreError> {
        either!(self, b => b.append_order_event(e))
    }

    /// Appends an audit entry (see [`crate::audit`]) in this batch's transaction.
    pub fn audit(&self, e: &crate::audit::Entry) -> Result<(), StoreError> {
        either!(self, b => b.audit(e))
    }

    /// Records a blind span's start, or its end.
    pub fn blind_span(&self, from: i64, until: Option<i64>) -> Result<(), StoreError> {
        either!(self, b => b.blind_span(from, until))
    }

    /// Records that a message came at QoS 0.
    pub fn qos0_seen(&self) -> Result<(), StoreError> {
        either!(self, b => b.qos0_seen())
    }

    pub fn count_reject(&self, reason: &str) -> Result<(), StoreError> {
        either!(self, b => b.count_reject(reason))
    }

    pub fn commit(self) -> Result<(), StoreError> {
        either!(self, b => b.commit())
    }
}

/// A store as others read it, read-only, beside a running core: the load test's accounting, the
/// after-action report, the command line, the district's view and the tests. Opening it never creates or
/// changes a store.
pub enum Reader {
    Sqlite(sqlite::Reader),
    Postgres(postgres::Reader),
}

impl Reader {
    /// Opens the store at `at` for reading; a store that is not there is an error, not an empty store.
    pub fn open(at: impl Into<Location>) -> Result<Reader, StoreError> {
        match at.into() {
            Location::Sqlite(p) => sqlite::Reader::open(&p).map(Reader::Sqlite),
            Location::Postgres(u) => postgres::Reader::open(&u).map(Reader::Postgres),
        }
    }

    /// The sequence of the last event logged (0 for none): how many events the core has accepted.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        either!(self, r => r.last_seq())
    }

    /// Events in the log.
    pub fn event_count(&self) -> Result<u64, StoreError> {
        either!(self, r => r.event_count())
    }

    /// The ids of the logged events, in the order they were logged.
    pub fn event_ids(&self) -> Result<Vec<String>, StoreError> {
        either!(self, r => r.event_ids())
    }

    /// Every work order as it stands, in id order.
    pub fn orders(&self) -> Result<Vec<Order>, StoreError> {
        either!(self, r => r.orders())
    }

    /// Every transition of every order, in the order they were appended.
    pub fn history(&self) -> Result<Vec<OrderEvent>, StoreError> {
        either!(self, r => r.history())
    }

    /// One order's transitions, in the order they were appended.
    pub fn order_events(&self, order: u64) -> Result<Vec<OrderEvent>, StoreError> {
        either!(self, r => r.order_events(order))
    }

    /// Messages the core refused, by reason.
    pub fn rejects(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        either!(self, r => r.rejects())
    }

    /// Messages refused for `reason` (0 when none were).
    pub fn rejected(&self, reason: &str) -> Result<u64, StoreError> {
        either!(self, r => r.rejected(reason))
    }

    /// The API tokens issued, as kept: (hash of the token, principal), in the order of their hashes.
    pub fn tokens(&self) -> Result<Vec<(String, String)>, StoreError> {
        either!(self, r => r.tokens())
    }

    /// The audit log's entries in order.
    pub fn audit_entries(&self) -> Result<Vec<crate::audit::Stored>, StoreError> {
        either!(self, r => r.audit_entries())
    }

    /// The audit log's chain, checked (see [`crate::audit::verify`]).
    pub fn verify_audit(&self, head: Option<&str>) -> Result<crate::audit::Verified, crate::audit::Broken> {
        either!(self, r => r.verify_audit(head))
    }
}

/// A transition's row as both stores keep it: order, at, actor, action, from, to, level, reason.
type TransitionRow = (i64, i64, String, String, Option<String>, String, String, Option<String>);

/// A transition from its row; `at` names the store for the error of a row that does not parse.
fn transition(row: TransitionRow, at: &str) -> Result<OrderEvent, StoreError> {
    let (order, t, actor, action, from, to, level, reason) = row;
    let corrupt = |e: serde_json::Error| StoreError::Corrupt { path: at.to_string(), detail: e.to_string() };
    Ok(OrderEvent {
        order: order as u64,
        at: t,
        actor,
        action,
        from: from.as_deref().map(unname).transpose().map_err(corrupt)?,
        to: unname(&to).map_err(corrupt)?,
        level: unname(&level).map_err(corrupt)?,
        reason,
    })
}

/// A unit enum's serde name, as stored.
fn name<T: serde::Serialize>(t: &T) -> String {
    serde_json::to_value(t).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// A unit enum from its stored serde name.
fn unname<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
}
