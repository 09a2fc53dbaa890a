//! The PostgreSQL store: a town's tables in a schema of its own (`postgres://user@host/db?schema=gaohang`),
//! so that several towns' cores share one database and a district reads them all.
//!
//! The same promises as the SQLite store: a batch's events, orders, transitions, audit entries, rejects and
//! blind spans in one transaction, committed before the caller acknowledges the broker; every event id
//! logged once (the in-memory index of [`super::ids::Ids`] decides, the `UNIQUE` key on `events.id` guards,
//! so that even two writers could not log one event twice); the audit log hash-chained and refused `UPDATE`
//! and `DELETE` by a trigger.
//!
//! One writer per town: [`Store::open`] takes a session advisory lock keyed by the schema and holds it as
//! long as its connection lives, so a second core on the same town is refused with [`StoreError::Held`]
//! (a standby waits for it instead: [`Store::open_when_free`]). The writer therefore numbers the events
//! itself, and a batch is sent in one round trip of statements at commit.
//!
//! The `postgres` crate blocks on a runtime of its own, which must not run inside the core's tokio
//! runtime: each connection lives on a thread of its own ([`Conn`]) and is handed closures.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::mpsc;

use postgres::{Client, NoTls};

use super::ids::Ids;
use super::{Loaded, SnapshotJob, StoreError, name};
use crate::orders::{Order, OrderEvent};

/// A town's schema in a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The URL as the `postgres` crate takes it: without `schema`.
    conn: String,
    /// The schema holding the town's tables.
    pub schema: String,
    /// For messages: no password.
    shown: String,
}

/// The schema when the URL names none.
pub const DEFAULT_SCHEMA: &str = "towntwin";

impl Url {
    fn config(&self) -> Result<postgres::Config, StoreError> {
        let mut cfg: postgres::Config =
            self.conn.parse().map_err(|e| StoreError::Postgres { at: self.shown.clone(), detail: format!("not a PostgreSQL URL: {e}") })?;
        if cfg.get_connect_timeout().is_none() {
            // An unreachable server is an error within seconds, not a hang.
            cfg.connect_timeout(std::time::Duration::from_secs(5));
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("towntwin");
        }
        // A server that vanishes (its network cut) fails the next call within seconds instead of a quarter
        // of an hour of retransmissions, with the core's lock held: the core stops, and its standby, which
        // the server let have the town once its own keepalives gave up on this session, is not fought for
        // the broker session.
        if cfg.get_tcp_user_timeout().is_none() {
            cfg.tcp_user_timeout(std::time::Duration::from_secs(10));
        }
        if cfg.get_keepalives_interval().is_none() {
            cfg.keepalives(true)
                .keepalives_idle(std::time::Duration::from_secs(5))
                .keepalives_interval(std::time::Duration::from_secs(1))
                .keepalives_retries(5);
        }
        Ok(cfg)
    }

    /// The URL as given, password included, with its schema: for a process started with it.
    pub fn full(&self) -> String {
        let sep = if self.conn.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={}", self.conn, self.schema)
    }

    /// The same database, another schema (a town's, or the district's registry).
    pub fn in_schema(&self, schema: &str) -> Result<Url, String> {
        check_schema(schema)?;
        let base = self.shown.rsplit_once("?schema=").map_or(self.shown.as_str(), |(b, _)| b);
        Ok(Url { conn: self.conn.clone(), schema: schema.to_string(), shown: format!("{base}?schema={schema}") })
    }

    /// The advisory lock that makes one core the town's writer.
    pub fn lock_key(&self) -> i64 {
        let h = blake3::hash(format!("towntwin-writer:{}", self.schema).as_bytes());
        i64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or_default())
    }
}

fn check_schema(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok && !s.starts_with("pg_") { Ok(()) } else { Err(format!("schema {s:?}: expected 1 to 63 of a-z, 0-9 and _, not starting with a digit or pg_")) }
}

impl std::str::FromStr for Url {
    type Err = String;

    fn from_str(s: &str) -> Result<Url, String> {
        let (base, query) = s.split_once('?').unwrap_or((s, ""));
        let mut schema = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.strip_prefix("schema=") {
                Some(v) => schema = Some(v.to_string()),
                None => rest.push(pair),
            }
        }
        let schema = schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_string());
        let conn = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
        let cfg: postgres::Config = conn.parse().map_err(|e| format!("{}: not a PostgreSQL URL: {e}", without_password(base)))?;
        check_schema(&schema).map_err(|e| format!("{}: {e}", without_password(base)))?;
        let hosts: Vec<String> = cfg
            .get_hosts()
            .iter()
            .zip(cfg.get_ports().iter().chain(std::iter::repeat(&5432)))
            .map(|(h, p)| match h {
                postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
                #[allow(unreachable_patterns)]
                other => format!("{other:?}"),
            })
            .collect();
        let user = cfg.get_user().map(|u| format!("{u}@")).unwrap_or_default();
        let shown = format!("postgres://{user}{}/{}?schema={schema}", hosts.join(","), cfg.get_dbname().unwrap_or(""));
        Ok(Url { conn, schema, shown })
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// `postgres://user:secret@host` as `postgres://user@host`.
fn without_password(base: &str) -> String {
    match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &base[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}{}", &base[..s + 3], &base[at..])
        }
        _ => base.to_string(),
    }
}

/// A PostgreSQL error with what the server said.
fn detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    }
}

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// A connection on a thread of its own, handed closures. Dropped, it finishes what it was handed and
/// closes.
pub(crate) struct Conn {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    at: String,
}

impl Conn {
    pub(crate) fn open(url: &Url, name: &str) -> Result<Conn, StoreError> {
        let at = url.to_string();
        let cfg = url.config()?;
        let search_path = format!("SET search_path TO \"{}\"", url.schema);
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), String>>(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut client = match cfg.connect(NoTls).and_then(|mut c| c.batch_execute(&search_path).map(|()| c)) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(detail(&e)));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while let Ok(job) = rx.recv() {
                    job(&mut client);
                }
            })
            .map_err(|e| StoreError::Postgres { at: at.clone(), detail: format!("cannot start the connection's thread: {e}") })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Conn { tx: Some(tx), thread: Some(thread), at }),
            Ok(Err(detail)) => Err(StoreError::Postgres { at, detail: format!("cannot connect: {detail}") }),
            Err(_) => Err(StoreError::Postgres { at, detail: "the connection's thread ended".into() }),
        }
    }

    /// Runs `f` on the connection and waits for its result.
    pub(crate) fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Client) -> Result<R, postgres::Error> + Send + 'static) -> Result<R, StoreError> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |c| {
            let _ = rtx.send(f(c).map_err(|e| detail(&e)));
        });
        let gone = || StoreError::Postgres { at: self.at.clone(), detail: "the connection's thread ended".into() };
        self.tx.as_ref().ok_or_else(gone)?.send(job).map_err(|_| gone())?;
        match rrx.recv() {
            Ok(r) => r.map_err(|detail| StoreError::Postgres { at: self.at.clone(), detail }),
            Err(_) => Err(gone()),
        }
    }

    /// Hands `f` over without waiting.
    fn cast(&self, f: impl FnOnce(&mut Client) + Send + 'static) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(Box::new(f)).is_ok())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The town's tables; `{s}` is the schema. Created under a transaction-scoped advisory lock, so that two
/// processes creating them at once (a core, a token being issued) do not collide.
const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.events (seq BIGINT PRIMARY KEY, id TEXT NOT NULL UNIQUE, time BIGINT NOT NULL, payload BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.orders (id BIGINT PRIMARY KEY, rule TEXT NOT NULL, key TEXT NOT NULL, area TEXT NOT NULL,
    state TEXT NOT NULL, level TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS orders_by_state ON {s}.orders(state);
CREATE TABLE IF NOT EXISTS {s}.order_events (seq BIGINT PRIMARY KEY, order_id BIGINT NOT NULL, at BIGINT NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, level TEXT NOT NULL, reason TEXT);
CREATE INDEX IF NOT EXISTS order_events_by_order ON {s}.order_events(order_id);
CREATE TABLE IF NOT EXISTS {s}.snapshots (upto BIGINT PRIMARY KEY, engine BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.rejects (reason TEXT PRIMARY KEY, count BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.tokens (hash TEXT PRIMARY KEY, principal TEXT NOT NULL, expires_at BIGINT, revoked_at BIGINT);
CREATE TABLE IF NOT EXISTS {s}.blind_spans (from_ms BIGINT PRIMARY KEY, until_ms BIGINT);
CREATE TABLE IF NOT EXISTS {s}.meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.audit (seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, recorded_at BIGINT NOT NULL, actor TEXT NOT NULL,
    scope TEXT NOT NULL, what TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE OR REPLACE FUNCTION {s}.audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON {s}.audit FOR EACH ROW EXECUTE FUNCTION {s}.audit_append_only();
";

fn create_tables(c: &mut Client, schema: &str) -> Result<(), postgres::Error> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&0x746f_776e_7477_696e_i64])?;
    // Quoted: a valid name may still be a reserved word (`user`, `order`).
    tx.batch_execute(&SCHEMA.replace("{s}", &format!("\"{schema}\"")))?;
    tx.commit()
}

/// Whether a standby should wait out this error: the town is held, or the server cannot be reached or is
/// starting or stopping. A refused login or a database that does not exist is final.
fn passing(e: &StoreError) -> bool {
    match e {
        StoreError::Held { .. } => true,
        StoreError::Postgres { detail, .. } => {
            // A host name that does not resolve will not resolve by waiting.
            !detail.contains("lookup")
                && [
                    "error connecting to server",
                    "error communicating with the server",
                    "connection closed",
                    // A server restarting ends its sessions (`pg_ctl stop -m fast`) as an administrator's command.
                    "terminating connection",
                    "starting up",
                    "shutting down",
                    "timed out",
                ]
                .iter()
                .any(|s| detail.contains(s))
        }
        _ => false,
    }
}

/// The core's writer on a town's schema.
pub struct Store {
    conn: Conn,
    /// Writes engine snapshots off the ingest path (see the SQLite store's `snapshotter`).
    snapshotter: Option<Conn>,
    url: Url,
    ids: Ids,
    /// The sequence the next event logged takes.
    next_seq: i64,
    /// The sequence the next transition appended takes (set through a batch's shared reference).
    next_transition: std::cell::Cell<i64>,
    /// The audit log's head as this writer last wrote or read it.
    head: Head,
}

impl Store {
    /// Opens the town's schema as its writer, creating its tables if need be; refused with
    /// [`StoreError::Held`] while another core holds the town.
    pub fn open(url: &Url) -> Result<Store, StoreError> {
        let conn = Conn::open(url, "store-postgres")?;
        let key = url.lock_key();
        let got = conn.call(move |c| {
            // The lock goes with this session. A core killed on its machine closes the connection and the
            // server ends the session at once; a machine that vanishes is found by these keepalives, within
            // about 10 s, and its lock freed for the standby.
            c.batch_execute("SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 5")?;
            c.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).map(|r| r.get::<_, bool>(0))
        })?;
        if !got {
            return Err(StoreError::Held { at: url.to_string(), key });
        }
        Store::opened(conn, url)
    }

    /// [`Store::open`] for a standby: waits until the town's active core lets go of it (its process ended,
    /// or its connection dropped), trying every `every`. A server that cannot be reached (restarting, say)
    /// is waited for too; at most `patience` in all (`None`: for ever).
    pub fn open_when_free(url: &Url, every: std::time::Duration, patience: Option<std::time::Duration>) -> Result<Store, StoreError> {
        let until = patience.map(|p| std::time::Instant::now() + p);
        let mut last = String::new();
        loop {
            match Store::open(url) {
                Err(e) if passing(&e) && until.is_none_or(|u| std::time::Instant::now() < u) => {
                    // Each new reason once: the town held is what a standby expects; anything else a warning.
                    let why = e.to_string();
                    if why != last {
                        match e {
                            StoreError::Held { .. } => tracing::info!("standby for {url}: {why}; waiting"),
                            _ => tracing::warn!("standby for {url}: {why}; waiting"),
                        }
                        last = why;
                    }
                    std::thread::sleep(every);
                }
                other => return other,
            }
        }
    }

    fn opened(conn: Conn, url: &Url) -> Result<Store, StoreError> {
        let schema = url.schema.clone();
        conn.call(move |c| create_tables(c, &schema))?;
        let (ids, last, transitions, head) = conn.call(|c| {
            let mut ids = Ids::default();
            let mut last = 0i64;
            for r in c.query("SELECT seq, id FROM events", &[])? {
                let (seq, id): (i64, &str) = (r.get(0), r.get(1));
                ids.insert(Ids::hash(id), seq);
                last = last.max(seq);
            }
            let transitions: i64 = c.query_one("SELECT COALESCE(MAX(seq), 0) FROM order_events", &[])?.get(0);
            Ok((ids, last, transitions, read_head(c)?))
        })?;
        let snapshotter = Conn::open(url, "snapshot-postgres").ok();
        Ok(Store { conn, snapshotter, url: url.clone(), ids, next_seq: last + 1, next_transition: std::cell::Cell::new(transitions + 1), head })
    }

    pub(super) fn at(&self) -> String {
        self.url.to_string()
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let orders = orders(&self.conn)?;
        let snapshot = self.conn.call(|c| {
            Ok(c.query_opt("SELECT upto, engine FROM snapshots ORDER BY upto DESC LIMIT 1", &[])?.map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1))))
        })?;
        let after = snapshot.as_ref().map_or(0, |s| s.0);
        let replay = self.conn.call(move |c| {
            Ok(c.query("SELECT seq, payload FROM events WHERE seq > $1 ORDER BY seq", &[&after])?.iter().map(|r| (r.get(0), r.get(1))).collect())
        })?;
        let rejects =
            self.conn.call(|c| Ok(c.query("SELECT reason, count FROM rejects", &[])?.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64)).collect()))?;
        let blind = self
            .conn
            .call(|c| Ok(c.query("SELECT from_ms, until_ms FROM blind_spans ORDER BY from_ms", &[])?.iter().map(|r| (r.get(0), r.get(1))).collect()))?;
        let qos0 = self.conn.call(|c| Ok(c.query_opt("SELECT value FROM meta WHERE key = 'qos0_seen'", &[])?.map(|r| r.get::<_, i64>(0))))?;
        Ok(Loaded { orders, snapshot, replay, rejects, blind, qos0_seen: qos0 == Some(1) })
    }

    pub fn put_token(&mut self, hash: &str, principal: &str, audit: &crate::audit::Entry) -> Result<(), StoreError> {
        let b = self.batch()?;
        b.ops.borrow_mut().tokens.push((hash.to_string(), principal.to_string(), None));
        b.audit(audit)?;
        b.commit()
    }

    pub fn token(&self, hash: &str) -> Result<Option<String>, StoreError> {
        token(&self.conn, hash)
    }

    pub fn snapshot(&self, upto: i64, make: SnapshotJob) -> Result<(), StoreError> {
        let write = move |c: &mut Client| -> Result<(), String> {
            let bytes = make()?;
            let mut tx = c.transaction().map_err(|e| detail(&e))?;
            tx.execute("INSERT INTO snapshots (upto, engine) VALUES ($1, $2) ON CONFLICT (upto) DO UPDATE SET engine = excluded.engine", &[&upto, &bytes])
                .map_err(|e| detail(&e))?;
            tx.execute("DELETE FROM snapshots WHERE upto < $1", &[&upto]).map_err(|e| detail(&e))?;
            tx.commit().map_err(|e| detail(&e))
        };
        match &self.snapshotter {
            Some(s) => {
                let handed = s.cast(move |c| {
                    if let Err(e) = write(c) {
                        tracing::warn!("engine snapshot up to event {upto} not written (a restart replays from the one before): {e}");
                    }
                });
                if !handed {
                    tracing::warn!("engine snapshot up to event {upto} not written: the snapshot connection is gone");
                }
                Ok(())
            }
            None => {
                let at = self.at();
                self.conn.call(move |c| Ok(write(c)))?.map_err(|detail| StoreError::Postgres { at, detail })
            }
        }
    }

    pub fn probe(&self) -> Result<(), StoreError> {
        let replica = self.conn.call(|c| c.query_one("SELECT pg_is_in_recovery()", &[]).map(|r| r.get::<_, bool>(0)))?;
        if replica {
            return Err(StoreError::Postgres { at: self.at(), detail: "the server is a read-only replica".into() });
        }
        Ok(())
    }

    pub fn batch(&mut self) -> Result<Batch<'_>, StoreError> {
        let (start, start_transition) = (self.next_seq, self.next_transition.get());
        Ok(Batch { store: self, ops: RefCell::new(Ops::default()), added: Vec::new(), start, start_transition, committed: false })
    }

    pub fn verify_audit(&self, head: Option<&str>) -> Result<crate::audit::Verified, crate::audit::Broken> {
        verify_audit(&self.conn, head)
    }

    pub fn audit_entries(&self) -> Result<Vec<crate::audit::Stored>, StoreError> {
        audit_entries(&self.conn)
    }

    pub fn event_count(&self) -> Result<i64, StoreError> {
        self.conn.call(|c| c.query_one("SELECT COUNT(*) FROM events", &[]).map(|r| r.get(0)))
    }

    pub fn order_events(&self, order: u64) -> Result<Vec<OrderEvent>, StoreError> {
        transitions(&self.conn, Some(order))
    }
}

/// A batch's writes, gathered and sent in one transaction at commit.
#[derive(Default)]
struct Ops {
    seqs: Vec<i64>,
    ids: Vec<String>,
    times: Vec<i64>,
    payloads: Vec<Vec<u8>>,
    /// By id: a batch writes an order once, as it stands at the end.
    orders: BTreeMap<i64, OrderRow>,
    /// With the sequence each takes.
    transitions: Vec<(i64, OrderEvent)>,
    audit: Vec<crate::audit::Entry>,
    blind: Vec<(i64, Option<i64>)>,
    qos0: bool,
    rejects: BTreeMap<String, i64>,
    /// (hash, principal, expires_at)
    tokens: Vec<(String, String, Option<i64>)>,
}

struct OrderRow {
    id: i64,
    rule: String,
    key: String,
    area: String,
    state: String,
    level: String,
    created_at: i64,
    updated_at: i64,
    body: String,
}

pub struct Batch<'a> {
    store: &'a mut Store,
    ops: RefCell<Ops>,
    /// Ids this batch added to the index, taken back if it does not commit.
    added: Vec<(u64, i64)>,
    /// The store's next sequences (events, transitions) when the batch began.
    start: i64,
    start_transition: i64,
    committed: bool,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // Not committed: nothing of it was written.
        if !self.committed {
            for (h, seq) in self.added.drain(..) {
                self.store.ids.remove(h, seq);
            }
            self.store.next_seq = self.start;
            self.store.next_transition.set(self.start_transition);
        }
    }
}

impl Batch<'_> {
    pub fn append_event(&mut self, id: &str, time: i64, payload: &[u8]) -> Result<Option<i64>, StoreError> {
        let h = Ids::hash(id);
        for seq in self.store.ids.candidates(h).collect::<Vec<_>>() {
            let stored = if seq >= self.start {
                self.ops.borrow().ids.get((seq - self.start) as usize).cloned()
            } else {
                self.store.conn.call(move |c| Ok(c.query_opt("SELECT id FROM events WHERE seq = $1", &[&seq])?.map(|r| r.get::<_, String>(0))))?
            };
            if stored.as_deref() == Some(id) {
                return Ok(None);
            }
        }
        let seq = self.store.next_seq;
        self.store.next_seq += 1;
        {
            let mut ops = self.ops.borrow_mut();
            ops.seqs.push(seq);
            ops.ids.push(id.to_string());
            ops.times.push(time);
            ops.payloads.push(payload.to_vec());
        }
        self.store.ids.insert(h, seq);
        self.added.push((h, seq));
        Ok(Some(seq))
    }

    pub fn put_order(&self, o: &Order) -> Result<(), StoreError> {
        let body = serde_json::to_string(o).map_err(|e| StoreError::Corrupt { path: self.store.at(), detail: e.to_string() })?;
        self.ops.borrow_mut().orders.insert(
            o.id as i64,
            OrderRow {
                id: o.id as i64,
                rule: o.rule.clone(),
                key: o.key.clone(),
                area: o.area.clone(),
                state: o.state.as_str().to_string(),
                level: format!("{:?}", o.level),
                created_at: o.created_at,
                updated_at: o.updated_at,
                body,
            },
        );
        Ok(())
    }

    pub fn append_order_event(&self, e: &OrderEvent) -> Result<(), StoreError> {
        let seq = self.store.next_transition.get();
        self.store.next_transition.set(seq + 1);
        self.ops.borrow_mut().transitions.push((seq, e.clone()));
        Ok(())
    }

    pub fn audit(&self, e: &crate::audit::Entry) -> Result<(), StoreError> {
        self.ops.borrow_mut().audit.push(e.clone());
        Ok(())
    }

    pub fn blind_span(&self, from: i64, until: Option<i64>) -> Result<(), StoreError> {
        self.ops.borrow_mut().blind.push((from, until));
        Ok(())
    }

    pub fn qos0_seen(&self) -> Result<(), StoreError> {
        self.ops.borrow_mut().qos0 = true;
        Ok(())
    }

    pub fn count_reject(&self, reason: &str) -> Result<(), StoreError> {
        *self.ops.borrow_mut().rejects.entry(reason.to_string()).or_default() += 1;
        Ok(())
    }

    pub fn commit(mut self) -> Result<(), StoreError> {
        let ops = std::mem::take(&mut *self.ops.borrow_mut());
        let head = self.store.head.clone();
        self.store.head = self.store.conn.call(move |c| write(c, &ops, head))?;
        // Committed: the ids and the sequences stay.
        self.committed = true;
        Ok(())
    }
}

/// A batch in one statement (so in one transaction of its own), prepared once per connection: each table's
/// rows as arrays. On this 2-core machine each round trip to the server cost 2-5 ms of waiting for the
/// scheduler beside a busy twin; a statement per row took 41 s for a town's day, a statement per table 43 s,
/// and this one statement per batch takes the round trips down to one.
const WRITE: &str = "
WITH ev AS (INSERT INTO events (seq, id, time, payload) SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bytea[])),
o AS (INSERT INTO orders (id, rule, key, area, state, level, created_at, updated_at, body)
    SELECT * FROM UNNEST($5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::text[])
    ON CONFLICT (id) DO UPDATE SET state = excluded.state, level = excluded.level, updated_at = excluded.updated_at, body = excluded.body),
t AS (INSERT INTO order_events (seq, order_id, at, actor, action, from_state, to_state, level, reason)
    SELECT * FROM UNNEST($14::bigint[], $15::bigint[], $16::bigint[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[])),
a AS (INSERT INTO audit (seq, at, recorded_at, actor, scope, what, target, outcome, prev, hash)
    SELECT * FROM UNNEST($23::bigint[], $24::bigint[], $25::bigint[], $26::text[], $27::text[], $28::text[], $29::text[], $30::text[], $31::text[], $32::text[])),
b AS (INSERT INTO blind_spans (from_ms, until_ms) SELECT * FROM UNNEST($33::bigint[], $34::bigint[])
    ON CONFLICT (from_ms) DO UPDATE SET until_ms = excluded.until_ms),
r AS (INSERT INTO rejects (reason, count) SELECT * FROM UNNEST($35::text[], $36::bigint[])
    ON CONFLICT (reason) DO UPDATE SET count = rejects.count + excluded.count),
q AS (INSERT INTO meta (key, value) SELECT 'qos0_seen', 1 WHERE $37::bool ON CONFLICT (key) DO UPDATE SET value = 1),
k AS (INSERT INTO tokens (hash, principal, expires_at) SELECT * FROM UNNEST($38::text[], $39::text[], $40::bigint[]))
SELECT 1";

thread_local! {
    /// [`WRITE`], prepared on this thread's connection.
    static PREPARED: RefCell<Option<postgres::Statement>> = const { RefCell::new(None) };
}

/// The audit log's head: its last entry's sequence and hash.
type Head = Option<(i64, String)>;

fn read_head(c: &mut Client) -> Result<Head, postgres::Error> {
    Ok(c.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?.map(|r| (r.get(0), r.get(1))))
}

/// Writes a batch after the audit head `head`; returns the new head. Another process may have appended to
/// the audit log since (a token issued by the command line): the batch then collides on the audit's key,
/// is not written at all, and is written again after the head as it now is.
fn write(c: &mut Client, ops: &Ops, mut head: Head) -> Result<Head, postgres::Error> {
    let stmt = match PREPARED.with(|p| p.borrow().clone()) {
        Some(s) => s,
        None => {
            let s = c.prepare(WRITE)?;
            PREPARED.with(|p| *p.borrow_mut() = Some(s.clone()));
            s
        }
    };
    let mut tries = 0;
    loop {
        let chained = chain(&head, &ops.audit);
        match write_once(c, &stmt, ops, &chained) {
            Ok(()) => return Ok(chained.last().map(|n| (n.seq, n.hash.clone())).or(head)),
            Err(e) if tries < 5 && e.as_db_error().is_some_and(|d| d.constraint() == Some("audit_pkey")) => {
                tries += 1;
                head = read_head(c)?;
            }
            Err(e) => return Err(e),
        }
    }
}

fn chain(head: &Head, entries: &[crate::audit::Entry]) -> Vec<crate::audit::Next> {
    let mut last = head.clone();
    entries
        .iter()
        .map(|e| {
            let n = crate::audit::Next::after(last.take(), e);
            last = Some((n.seq, n.hash.clone()));
            n
        })
        .collect()
}

fn write_once(c: &mut Client, stmt: &postgres::Statement, ops: &Ops, chained: &[crate::audit::Next]) -> Result<(), postgres::Error> {
    let rows: Vec<&OrderRow> = ops.orders.values().collect();
    let col = |f: fn(&OrderRow) -> &String| rows.iter().map(|o| f(o).as_str()).collect::<Vec<&str>>();
    let num = |f: fn(&OrderRow) -> i64| rows.iter().map(|o| f(o)).collect::<Vec<i64>>();
    let t = &ops.transitions;
    let a = &ops.audit;
    let rejects: (Vec<&str>, Vec<i64>) = ops.rejects.iter().map(|(r, n)| (r.as_str(), *n)).unzip();
    let tokens: (Vec<&str>, Vec<&str>) = ops.tokens.iter().map(|(h, p, _)| (h.as_str(), p.as_str())).unzip();
    let expires: Vec<Option<i64>> = ops.tokens.iter().map(|t| t.2).collect();
    let blind: (Vec<i64>, Vec<Option<i64>>) = ops.blind.iter().copied().unzip();
    c.execute(
        stmt,
        &[
            &ops.seqs,
            &ops.ids,
            &ops.times,
            &ops.payloads,
            &num(|o| o.id),
            &col(|o| &o.rule),
            &col(|o| &o.key),
            &col(|o| &o.area),
            &col(|o| &o.state),
            &col(|o| &o.level),
            &num(|o| o.created_at),
            &num(|o| o.updated_at),
            &col(|o| &o.body),
            &t.iter().map(|(s, _)| *s).collect::<Vec<i64>>(),
            &t.iter().map(|(_, e)| e.order as i64).collect::<Vec<i64>>(),
            &t.iter().map(|(_, e)| e.at).collect::<Vec<i64>>(),
            &t.iter().map(|(_, e)| e.actor.as_str()).collect::<Vec<&str>>(),
            &t.iter().map(|(_, e)| e.action.as_str()).collect::<Vec<&str>>(),
            &t.iter().map(|(_, e)| e.from.as_ref().map(name)).collect::<Vec<Option<String>>>(),
            &t.iter().map(|(_, e)| name(&e.to)).collect::<Vec<String>>(),
            &t.iter().map(|(_, e)| name(&e.level)).collect::<Vec<String>>(),
            &t.iter().map(|(_, e)| e.reason.as_deref()).collect::<Vec<Option<&str>>>(),
            &chained.iter().map(|n| n.seq).collect::<Vec<i64>>(),
            &a.iter().map(|e| e.at).collect::<Vec<i64>>(),
            &chained.iter().map(|n| n.recorded_at).collect::<Vec<i64>>(),
            &a.iter().map(|e| e.actor.as_str()).collect::<Vec<&str>>(),
            &a.iter().map(|e| e.scope.as_str()).collect::<Vec<&str>>(),
            &a.iter().map(|e| e.what.as_str()).collect::<Vec<&str>>(),
            &a.iter().map(|e| e.target.as_str()).collect::<Vec<&str>>(),
            &a.iter().map(|e| e.outcome.as_str()).collect::<Vec<&str>>(),
            &chained.iter().map(|n| n.prev.as_str()).collect::<Vec<&str>>(),
            &chained.iter().map(|n| n.hash.as_str()).collect::<Vec<&str>>(),
            &blind.0,
            &blind.1,
            &rejects.0,
            &rejects.1,
            &ops.qos0,
            &tokens.0,
            &tokens.1,
            &expires,
        ],
    )?;
    Ok(())
}

/// Issues a token into a town's schema (created if need be) beside a core that may be running on it: the
/// token's hash and its audit entry in one transaction. `entry` makes the audit entry from the newest
/// logged event's time.
pub fn issue_token(
    url: &Url,
    hash: &str,
    principal: &str,
    expires_at: Option<i64>,
    entry: impl FnOnce(i64) -> crate::audit::Entry + Send + 'static,
) -> Result<(), StoreError> {
    let conn = Conn::open(url, "token-postgres")?;
    let schema = url.schema.clone();
    conn.call(move |c| create_tables(c, &schema))?;
    let (hash, principal) = (hash.to_string(), principal.to_string());
    write_beside(&conn, move |at| Ops { tokens: vec![(hash, principal, expires_at)], audit: vec![entry(at)], ..Ops::default() })
}

/// Appends an entry to a town's audit log from beside the core that may be running on it (the district's
/// view of an order): the entry after the log's head, in a transaction of its own; the running core's next
/// batch then collides on the head and is written after it (as after a token issued from the command line).
/// `entry` makes the entry from the newest logged event's time.
pub fn append_audit(url: &Url, entry: impl FnOnce(i64) -> crate::audit::Entry + Send + 'static) -> Result<(), StoreError> {
    let conn = Conn::open(url, "audit-postgres")?;
    write_beside(&conn, move |at| Ops { audit: vec![entry(at)], ..Ops::default() })
}

/// Writes what `make` makes (from the newest logged event's time) after the audit log's head, from beside
/// a core that may be running on the town: the command line's tokens, the district's views.
fn write_beside(conn: &Conn, make: impl FnOnce(i64) -> Ops + Send + 'static) -> Result<(), StoreError> {
    conn.call(move |c| {
        let ops = make(newest_event_time(c)?);
        let head = read_head(c)?;
        write(c, &ops, head).map(drop)
    })
}

/// The newest logged event's time (0 for none): what the command line's audit entries are stamped with.
fn newest_event_time(c: &mut Client) -> Result<i64, postgres::Error> {
    Ok(c.query_one("SELECT COALESCE((SELECT time FROM events ORDER BY seq DESC LIMIT 1), 0)", &[])?.get(0))
}

fn token(conn: &Conn, hash: &str) -> Result<Option<String>, StoreError> {
    let hash = hash.to_string();
    let now = crate::auth::wall_ms();
    // Revoked or expired tokens are no one's.
    conn.call(move |c| {
        Ok(c.query_opt("SELECT principal FROM tokens WHERE hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)", &[&hash, &now])?
            .map(|r| r.get(0)))
    })
}

/// Revokes the tokens whose `column` (`hash` or `principal`) is `value` and that are not revoked yet, each
/// with its audit entry, in one transaction; returns their principals.
pub fn revoke_tokens(url: &Url, column: &'static str, value: &str, entry: fn(i64, &str) -> crate::audit::Entry) -> Result<Vec<String>, StoreError> {
    let conn = Conn::open(url, "token-postgres")?;
    let value = value.to_string();
    let now = crate::auth::wall_ms();
    conn.call(move |c| {
        let at = newest_event_time(c)?;
        let mut tx = c.transaction()?;
        tx.batch_execute("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE")?;
        let principals: Vec<String> = tx
            .query(&format!("UPDATE tokens SET revoked_at = $1 WHERE {column} = $2 AND revoked_at IS NULL RETURNING principal"), &[&now, &value])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let head: Head = tx.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?.map(|r| (r.get(0), r.get(1)));
        let entries: Vec<crate::audit::Entry> = principals.iter().map(|p| entry(at, p)).collect();
        for (n, e) in chain(&head, &entries).iter().zip(&entries) {
            tx.execute(
                "INSERT INTO audit (seq, at, recorded_at, actor, scope, what, target, outcome, prev, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[&n.seq, &e.at, &n.recorded_at, &e.actor, &e.scope, &e.what, &e.target, &e.outcome, &n.prev, &n.hash],
            )?;
        }
        tx.commit()?;
        Ok(principals)
    })
}

fn orders(conn: &Conn) -> Result<Vec<Order>, StoreError> {
    let bodies: Vec<String> = conn.call(|c| Ok(c.query("SELECT body FROM orders ORDER BY id", &[])?.iter().map(|r| r.get(0)).collect()))?;
    bodies.iter().map(|b| serde_json::from_str::<Order>(b).map_err(|e| StoreError::Corrupt { path: conn.at.clone(), detail: e.to_string() })).collect()
}

fn transitions(conn: &Conn, order: Option<u64>) -> Result<Vec<OrderEvent>, StoreError> {
    const COLUMNS: &str = "SELECT order_id, at, actor, action, from_state, to_state, level, reason FROM order_events";
    let rows: Vec<super::TransitionRow> = conn.call(move |c| {
        let rows = match order {
            Some(o) => c.query(&format!("{COLUMNS} WHERE order_id = $1 ORDER BY seq"), &[&(o as i64)])?,
            None => c.query(&format!("{COLUMNS} ORDER BY seq"), &[])?,
        };
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7))).collect())
    })?;
    rows.into_iter().map(|row| super::transition(row, &conn.at)).collect()
}

fn audit_entries(conn: &Conn) -> Result<Vec<crate::audit::Stored>, StoreError> {
    conn.call(|c| {
        Ok(c.query(crate::audit::SELECT_ALL, &[])?
            .iter()
            .map(|r| crate::audit::Stored {
                seq: r.get(0),
                entry: crate::audit::Entry { at: r.get(1), actor: r.get(3), scope: r.get(4), what: r.get(5), target: r.get(6), outcome: r.get(7) },
                recorded_at: r.get(2),
                prev: r.get(8),
                hash: r.get(9),
            })
            .collect())
    })
}

fn verify_audit(conn: &Conn, head: Option<&str>) -> Result<crate::audit::Verified, crate::audit::Broken> {
    let rows = audit_entries(conn).map_err(|e| crate::audit::Broken::Read(e.to_string()))?;
    crate::audit::verify_rows(rows.into_iter().map(Ok), head)
}

/// A town's schema, read-only.
pub struct Reader {
    conn: Conn,
}

impl Reader {
    /// Opens a town's schema for reading; a schema without the core's tables is [`StoreError::Missing`].
    pub fn open(url: &Url) -> Result<Reader, StoreError> {
        let conn = Conn::open(url, "reader-postgres")?;
        let schema = url.schema.clone();
        let there = conn.call(move |c| {
            c.batch_execute("SET default_transaction_read_only = on")?;
            c.query_one("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'events'", &[&schema])
                .map(|r| r.get::<_, i64>(0))
        })?;
        if there == 0 {
            return Err(StoreError::Missing { at: url.to_string() });
        }
        Ok(Reader { conn })
    }

    /// The principal of a token issued into this town's schema (none if unknown, expired or revoked).
    pub fn token(&self, hash: &str) -> Result<Option<String>, StoreError> {
        token(&self.conn, hash)
    }

    /// How many events of each CloudEvents type the log holds (read from the payloads, in the server).
    pub fn count_by_type(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.conn.call(|c| {
            Ok(c.query("SELECT COALESCE(substring(convert_from(payload, 'UTF8') from '\"type\":\"([^\"]+)\"'), '?'), COUNT(*) FROM events GROUP BY 1", &[])?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect())
        })
    }

    pub fn last_seq(&self) -> Result<u64, StoreError> {
        self.conn.call(|c| c.query_one("SELECT COALESCE(MAX(seq), 0) FROM events", &[]).map(|r| r.get::<_, i64>(0) as u64))
    }

    pub fn event_count(&self) -> Result<u64, StoreError> {
        self.conn.call(|c| c.query_one("SELECT COUNT(*) FROM events", &[]).map(|r| r.get::<_, i64>(0) as u64))
    }

    pub fn event_ids(&self) -> Result<Vec<String>, StoreError> {
        self.conn.call(|c| Ok(c.query("SELECT id FROM events ORDER BY seq", &[])?.iter().map(|r| r.get(0)).collect()))
    }

    pub fn orders(&self) -> Result<Vec<Order>, StoreError> {
        orders(&self.conn)
    }

    pub fn history(&self) -> Result<Vec<OrderEvent>, StoreError> {
        transitions(&self.conn, None)
    }

    pub fn order_events(&self, order: u64) -> Result<Vec<OrderEvent>, StoreError> {
        transitions(&self.conn, Some(order))
    }

    pub fn rejects(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.conn.call(|c| Ok(c.query("SELECT reason, count FROM rejects", &[])?.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64)).collect()))
    }

    pub fn rejected(&self, reason: &str) -> Result<u64, StoreError> {
        let reason = reason.to_string();
        self.conn.call(move |c| Ok(c.query_opt("SELECT count FROM rejects WHERE reason = $1", &[&reason])?.map_or(0, |r| r.get::<_, i64>(0) as u64)))
    }

    pub fn tokens(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.conn.call(|c| Ok(c.query("SELECT hash, principal FROM tokens ORDER BY hash", &[])?.iter().map(|r| (r.get(0), r.get(1))).collect()))
    }

    pub fn audit_entries(&self) -> Result<Vec<crate::audit::Stored>, StoreError> {
        audit_entries(&self.conn)
    }

    pub fn verify_audit(&self, head: Option<&str>) -> Result<crate::audit::Verified, crate::audit::Broken> {
        verify_audit(&self.conn, head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_schema_and_hide_the_password() {
        let u: Url = "postgres://core:secret@127.0.0.1:5433/district?schema=gaohang&connect_timeout=2".parse().unwrap();
        assert_eq!(u.schema, "gaohang");
        assert_eq!(u.to_string(), "postgres://core@127.0.0.1:5433/district?schema=gaohang");
        assert!(!u.conn.contains("schema"), "{}", u.conn);
        assert!(u.conn.contains("connect_timeout=2"));
        let d: Url = "postgresql://127.0.0.1/db".parse().unwrap();
        assert_eq!(d.schema, DEFAULT_SCHEMA);
        assert_ne!(u.lock_key(), d.lock_key());
        for bad in [
            "postgres://h/db?schema=Gaohang",
            "postgres://h/db?schema=1town",
            "postgres://h/db?schema=a;drop",
            "postgres://h/db?schema=",
            "postgres://h/db?schema=pg_town",
        ] {
            let err = bad.parse::<Url>().expect_err(bad);
            assert!(err.contains("schema"), "{bad}: {err}");
        }
        let err = "postgres://u:pw@h/db?nonsense=1".parse::<Url>().expect_err("unknown option");
        assert!(!err.contains("pw"), "{err}");
    }
}

/// The schema that holds a district's registry: its towns (each with the schema its core writes), the
/// towns' areas and committees (so that a committee's principal sees its estates' orders), and the district's
/// own tokens. Never a town's id (town ids take no `_`).
pub const DISTRICT_SCHEMA: &str = "district_registry";

const DISTRICT_TABLES: &str = "
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.towns (id TEXT PRIMARY KEY, name TEXT NOT NULL, schema TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS {s}.areas (town TEXT NOT NULL REFERENCES {s}.towns (id), area TEXT NOT NULL, committee TEXT,
    PRIMARY KEY (town, area));
CREATE TABLE IF NOT EXISTS {s}.tokens (hash TEXT PRIMARY KEY, principal TEXT NOT NULL, issued_at BIGINT NOT NULL, expires_at BIGINT,
    revoked_at BIGINT);
";

/// A town as the district's registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredTown {
    pub id: String,
    pub name: String,
    /// The schema its core writes (read with [`Reader`]).
    pub schema: String,
}

/// The district's registry ([`DISTRICT_SCHEMA`]) in a database its towns' schemas share.
pub struct District {
    conn: Conn,
    url: Url,
}

impl District {
    /// Opens the registry of the database `url` names (its `schema` is ignored), creating it if need be.
    pub fn open(url: &Url) -> Result<District, StoreError> {
        let url = url.in_schema(DISTRICT_SCHEMA).map_err(|detail| StoreError::Postgres { at: url.to_string(), detail })?;
        let conn = Conn::open(&url, "district-postgres")?;
        conn.call(|c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&0x746f_776e_7477_696e_i64])?;
            tx.batch_execute(&DISTRICT_TABLES.replace("{s}", DISTRICT_SCHEMA))?;
            tx.commit()
        })?;
        Ok(District { conn, url })
    }

    /// Registers a town (or updates it): its name, its schema, and its areas with their committees (a
    /// road has none).
    pub fn register(&self, town: &RegisteredTown, areas: Vec<(String, Option<String>)>) -> Result<(), StoreError> {
        let t = town.clone();
        self.conn.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO towns (id, name, schema) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET name = excluded.name, schema = excluded.schema",
                &[&t.id, &t.name, &t.schema],
            )?;
            tx.execute("DELETE FROM areas WHERE town = $1", &[&t.id])?;
            let (names, committees): (Vec<String>, Vec<Option<String>>) = areas.into_iter().unzip();
            tx.execute("INSERT INTO areas (town, area, committee) SELECT $1, * FROM UNNEST($2::text[], $3::text[])", &[&t.id, &names, &committees])?;
            tx.commit()
        })
    }

    /// The registered towns, by id.
    pub fn towns(&self) -> Result<Vec<RegisteredTown>, StoreError> {
        self.conn.call(|c| {
            Ok(c.query("SELECT id, name, schema FROM towns ORDER BY id", &[])?
                .iter()
                .map(|r| RegisteredTown { id: r.get(0), name: r.get(1), schema: r.get(2) })
                .collect())
        })
    }

    /// A town's areas and their committees.
    pub fn areas(&self, town: &str) -> Result<std::collections::HashMap<String, Option<String>>, StoreError> {
        let town = town.to_string();
        self.conn.call(move |c| Ok(c.query("SELECT area, committee FROM areas WHERE town = $1", &[&town])?.iter().map(|r| (r.get(0), r.get(1))).collect()))
    }

    /// A town's schema, to read with [`Reader::open`].
    pub fn town_url(&self, town: &RegisteredTown) -> Result<Url, StoreError> {
        self.url.in_schema(&town.schema).map_err(|detail| StoreError::Postgres { at: self.url.to_string(), detail })
    }

    /// Issues a district token (its hash stored; `at` is the wall-clock time of issue, as for a town's).
    pub fn issue_token(&self, hash: &str, principal: &str, issued_at: i64, expires_at: Option<i64>) -> Result<(), StoreError> {
        let (hash, principal) = (hash.to_string(), principal.to_string());
        self.conn.call(move |c| {
            c.execute("INSERT INTO tokens (hash, principal, issued_at, expires_at) VALUES ($1, $2, $3, $4)", &[&hash, &principal, &issued_at, &expires_at])
                .map(drop)
        })
    }

    /// The principal of a district token (none if unknown, expired or revoked).
    pub fn token(&self, hash: &str) -> Result<Option<String>, StoreError> {
        token(&self.conn, hash)
    }

    /// Revokes the district's tokens of `principal`; returns how many.
    pub fn revoke(&self, principal: &str) -> Result<u64, StoreError> {
        let (principal, now) = (principal.to_string(), crate::auth::wall_ms());
        self.conn.call(move |c| c.execute("UPDATE tokens SET revoked_at = $1 WHERE principal = $2 AND revoked_at IS NULL", &[&now, &principal]))
    }
}
