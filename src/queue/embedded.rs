//! The embedded async store: SQLite (through rusqlite, `bundled`) in WAL mode with
//! `synchronous=FULL`, one file under the data dir.
//!
//! Why SQLite: `benches/async_store.rs` measured it beside redb and fjall on this queue's
//! workload (benches/README.md). With group commit it matched the plain file + `fdatasync`
//! baseline as fjall did (redb reached 0.6-0.8 of it), acks (delete the oldest) stayed fast
//! where fjall walks tombstones, it reopens after `kill -9` in about a millisecond (redb walks
//! the whole file), and its durability is the best documented: in WAL mode with
//! `synchronous=FULL` the WAL is synced at every commit, so a committed transaction survives
//! a power loss (sqlite.org/pragma.html). Costs accepted: C behind FFI, a slower clean
//! release build, more bytes written per small record.
//!
//! How it runs:
//! - **One writer thread** owns the connection. Operations arrive on a channel; the thread
//!   takes what is there (up to [`MAX_BATCH`]), runs it all in one transaction and commits
//!   once, then answers each caller: concurrent enqueues share one sync (group commit), and
//!   nothing is answered before its commit.
//! - **An index in memory** (per function: the waiting calls by due time and id, and every
//!   queued call's arrival) says what to hand out without a query; it is rebuilt from the
//!   file at open. The writer adds each batch's new calls to it, under its lock once per
//!   batch, before answering them; an enqueue itself takes no lock: it takes its place under
//!   the bound on one counter (calls in the index and enqueues being written). Leases live
//!   only in memory: after a restart every call is waiting again (at least once).
//! - Ids come from `AUTOINCREMENT`, so they only grow and a call keeps its id through
//!   retries, burial and replay.
//! - Every statement the writer runs is prepared once (`prepare_cached`): parsing the INSERT
//!   for each enqueue was a sixth of the writer thread's CPU under `loadtest/run --async`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::queue::call::{EncodedCall, QueuedCall};
use crate::queue::store::{Backlog, CallStore, DeadLetter, StoreError, Taken};

/// The most operations one transaction takes.
const MAX_BATCH: usize = 512;
/// The store's file under the data dir.
pub const FILE: &str = "async-queue.sqlite";

/// See the module doc.
pub struct EmbeddedStore {
    /// To the writer thread (`Sender` is `Sync`: callers send without a lock of their own).
    ops: mpsc::Sender<Batched>,
    /// Shared with the writer thread, which adds enqueued calls.
    index: Arc<Mutex<Index>>,
    /// The index's `queued`.
    queued: Arc<AtomicU64>,
    /// At most this many calls queued.
    bound: u64,
    commits: Arc<AtomicU64>,
    path: PathBuf,
}

/// One operation and where its answer goes.
struct Batched {
    op: Op,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

enum Op {
    Enqueue(EncodedCall),
    Read(Vec<u64>),
    Ack(u64),
    Retry {
        id: u64,
        attempts: u32,
        at_unix_ms: u64,
    },
    Bury {
        id: u64,
        attempts: u32,
        status: u16,
        reason: String,
        now_unix_ms: u64,
    },
    ListDead(Option<String>),
    Replay(u64),
    Discard(u64),
}

enum Answer {
    Id(u64),
    Records(Vec<(u64, Vec<u8>, u32)>),
    Done,
    Dead(Vec<DeadLetter>),
    /// A replayed call: its function and arrival.
    Replayed(String, u64),
    /// A dropped dead letter's function.
    Discarded(String),
}

#[derive(Default)]
struct Index {
    /// Keyed by the same `Arc` as [`Pending::name`]: a call's entry shares its function's
    /// name instead of holding a copy.
    functions: HashMap<Arc<str>, Pending>,
    /// Every queued call: its function, and when it is due while it waits (None: leased).
    calls: HashMap<u64, (Arc<str>, Option<u64>), BuildHasherDefault<IdHasher>>,
    /// The calls in `calls` and the enqueues admitted and being written, kept without the
    /// lock: an enqueue takes its place here first (`EmbeddedStore::enqueue`), and the
    /// writer's [`Index::insert`] of it adds nothing; a call leaving `calls` frees its place.
    queued: Arc<AtomicU64>,
    /// Dead letters per function.
    dead: HashMap<String, u64>,
}

struct Pending {
    name: Arc<str>,
    /// Waiting calls by (due, id).
    ready: BTreeSet<(u64, u64)>,
    /// Every queued call (waiting or leased): id -> arrival.
    arrivals: BTreeMap<u64, u64>,
}

// === impl EmbeddedStore ===

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, holding at most `bound` calls.
    pub fn open(dir: &Path, bound: u64) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| backend(&e))?;
        let path = dir.join(FILE);
        let conn = Connection::open(&path).map_err(|e| backend(&e))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS calls (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 function TEXT NOT NULL,
                 call_id TEXT NOT NULL,
                 arrived_ms INTEGER NOT NULL,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 due_ms INTEGER NOT NULL DEFAULT 0,
                 record BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS dead (
                 id INTEGER PRIMARY KEY,
                 function TEXT NOT NULL,
                 call_id TEXT NOT NULL,
                 arrived_ms INTEGER NOT NULL,
                 attempts INTEGER NOT NULL,
                 failed_ms INTEGER NOT NULL,
                 status INTEGER NOT NULL,
                 reason TEXT NOT NULL,
                 record BLOB NOT NULL);
             CREATE INDEX IF NOT EXISTS dead_by_function ON dead(function, id);",
        )
        .map_err(|e| backend(&e))?;
        let mut index = Index::default();
        {
            let mut q = conn
                .prepare("SELECT id, function, arrived_ms, due_ms FROM calls")
                .map_err(|e| backend(&e))?;
            let rows = q
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(|e| backend(&e))?;
            for row in rows {
                let (id, function, arrived, due) = row.map_err(|e| backend(&e))?;
                let name = index.name(&function);
                index.add(name, id as u64, arrived as u64, due as u64);
            }
        }
        {
            let mut q = conn
                .prepare("SELECT function, count(*) FROM dead GROUP BY function")
                .map_err(|e| backend(&e))?;
            let rows = q
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(|e| backend(&e))?;
            for row in rows {
                let (function, n) = row.map_err(|e| backend(&e))?;
                index.dead.insert(function, n as u64);
            }
        }
        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        tracing::info!(path = %path.display(), queued = index.calls.len(), "async queue opened");
        let queued = index.queued.clone();
        let index = Arc::new(Mutex::new(index));
        let (indexed, places) = (index.clone(), queued.clone());
        std::thread::Builder::new()
            .name("faasgate-queue".into())
            .spawn(move || write_loop(conn, rx, &indexed, &places, &counted))
            .map_err(|e| backend(&e))?;
        Ok(Arc::new(Self {
            ops: tx,
            index,
            queued,
            bound,
            commits,
            path,
        }))
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Transactions committed so far (group commit shares them between operations).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    async fn run(&self, op: Op) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.ops
            .send(Batched { op, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("queue index mutex poisoned")
    }
}

#[async_trait]
impl CallStore for EmbeddedStore {
    async fn enqueue(&self, call: EncodedCall) -> Result<u64, StoreError> {
        // A place is taken before the write, so concurrent enqueues cannot pass the bound
        // together; the call keeps it once stored, until it leaves the index.
        let queued = self.queued.fetch_add(1, Ordering::SeqCst);
        if queued >= self.bound {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(StoreError::Full(queued));
        }
        // The record moves to the writer, which adds the call to the index, or gives the
        // place back if the write fails (then, not here: this future may be dropped while
        // it waits, by a client gone). No copy, no lock.
        let (reply, answer) = oneshot::channel();
        if self
            .ops
            .send(Batched {
                op: Op::Enqueue(call),
                reply,
            })
            .is_err()
        {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(stopped());
        }
        match answer.await.map_err(|_| stopped())?? {
            Answer::Id(id) => Ok(id),
            _ => Err(unexpected()),
        }
    }

    async fn take(
        &self,
        function: &str,
        max: usize,
        now_unix_ms: u64,
    ) -> Result<Vec<Taken>, StoreError> {
        let ids = self.index().take_due(function, max, now_unix_ms);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let records = match self.run(Op::Read(ids.clone())).await {
            Ok(Answer::Records(r)) => r,
            Ok(_) => return Err(unexpected()),
            Err(e) => {
                // Not handed out: waiting again.
                let mut index = self.index();
                for &id in &ids {
                    index.set_due(id, 0);
                }
                return Err(e);
            }
        };
        let mut out = Vec::with_capacity(records.len());
        for (id, bytes, attempts) in records {
            match QueuedCall::decode(&bytes) {
                Ok(call) => out.push(Taken { id, call, attempts }),
                Err(e) => {
                    tracing::error!(id, error = %e, "async queue: an unreadable record goes to the dead letters");
                    self.bury(id, attempts, 0, &e.to_string(), now_unix_ms)
                        .await?;
                }
            }
        }
        Ok(out)
    }

    async fn ack(&self, id: u64) -> Result<(), StoreError> {
        self.run(Op::Ack(id)).await?;
        self.index().remove(id);
        Ok(())
    }

    async fn retry(&self, id: u64, attempts: u32, at_unix_ms: u64) -> Result<(), StoreError> {
        self.run(Op::Retry {
            id,
            attempts,
            at_unix_ms,
        })
        .await?;
        self.index().set_due(id, at_unix_ms);
        Ok(())
    }

    async fn bury(
        &self,
        id: u64,
        attempts: u32,
        status: u16,
        reason: &str,
        now_unix_ms: u64,
    ) -> Result<(), StoreError> {
        self.run(Op::Bury {
            id,
            attempts,
            status,
            reason: reason.to_string(),
            now_unix_ms,
        })
        .await?;
        let mut index = self.index();
        if let Some((function, _)) = index.calls.get(&id) {
            let function = function.clone();
            *index.dead.entry(function.to_string()).or_default() += 1;
        }
        index.remove(id);
        Ok(())
    }

    async fn dead_letters(&self, function: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        match self.run(Op::ListDead(function.map(str::to_string))).await? {
            Answer::Dead(d) => Ok(d),
            _ => Err(unexpected()),
        }
    }

    async fn replay(&self, id: u64) -> Result<(), StoreError> {
        let Answer::Replayed(function, arrived) = self.run(Op::Replay(id)).await? else {
            return Err(unexpected());
        };
        let mut index = self.index();
        index.dead_gone(&function);
        let name = index.name(&function);
        index.add(name, id, arrived, 0);
        Ok(())
    }

    async fn discard(&self, id: u64) -> Result<(), StoreError> {
        let Answer::Discarded(function) = self.run(Op::Discard(id)).await? else {
            return Err(unexpected());
        };
        self.index().dead_gone(&function);
        Ok(())
    }

    fn dead_counts(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .index()
            .dead
            .iter()
            .map(|(f, n)| (f.clone(), *n))
            .collect();
        out.sort();
        out
    }

    fn backlog(&self) -> Vec<Backlog> {
        let index = self.index();
        let mut out: Vec<Backlog> = index
            .functions
            .iter()
            .filter(|(_, p)| !p.arrivals.is_empty())
            .map(|(f, p)| Backlog {
                function: f.to_string(),
                queued: p.arrivals.len() as u64,
                leased: (p.arrivals.len() - p.ready.len()) as u64,
                // Ids follow acceptance, so the first is the oldest (to the millisecond
                // between two calls accepted at once).
                oldest_unix_ms: p.arrivals.first_key_value().map_or(0, |(_, at)| *at),
                next_due_unix_ms: p.ready.first().map(|(at, _)| *at),
            })
            .collect();
        out.sort_by(|a, b| a.function.cmp(&b.function));
        out
    }
}

/// Hashes the store's ids (which it assigns itself, so no client chooses them) with one
/// multiplication instead of SipHash: the index's `calls` map was a tenth of the enqueue
/// path's instructions in the gateway's workers.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        // Fibonacci hashing: sequential ids spread over the low bits (a bijection of them)
        // and the high ones.
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

// === impl Index ===

impl Index {
    /// One dead letter of `function` fewer.
    fn dead_gone(&mut self, function: &str) {
        if let Some(n) = self.dead.get_mut(function) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.dead.remove(function);
            }
        }
    }

    /// `function`'s name as the index holds it (a new one if it holds none).
    fn name(&self, function: &str) -> Arc<str> {
        match self.functions.get(function) {
            Some(p) => p.name.clone(),
            None => function.into(),
        }
    }

    /// A call joins the index (from the file, or replayed) and takes a place.
    fn add(&mut self, function: Arc<str>, id: u64, arrived: u64, due: u64) {
        self.insert(function, id, arrived, due);
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    /// A call joins the index in the place its enqueue took.
    fn insert(&mut self, function: Arc<str>, id: u64, arrived: u64, due: u64) {
        let p = self
            .functions
            .entry(function.clone())
            .or_insert_with(|| Pending {
                name: function.clone(),
                ready: BTreeSet::new(),
                arrivals: BTreeMap::new(),
            });
        p.arrivals.insert(id, arrived);
        p.ready.insert((due, id));
        self.calls.insert(id, (p.name.clone(), Some(due)));
    }

    /// Leases up to `max` calls of `function` due at `now`, oldest due first.
    fn take_due(&mut self, function: &str, max: usize, now: u64) -> Vec<u64> {
        let Some(p) = self.functions.get_mut(function) else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        while ids.len() < max {
            match p.ready.first() {
                Some(&(at, id)) if at <= now => {
                    p.ready.pop_first();
                    if let Some(c) = self.calls.get_mut(&id) {
                        c.1 = None;
                    }
                    ids.push(id);
                }
                _ => break,
            }
        }
        ids
    }

    /// Ends a lease: the call waits again, due at `at`.
    fn set_due(&mut self, id: u64, at: u64) {
        let Some((function, due)) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(p) = self.functions.get_mut(&**function) else {
            return;
        };
        if let Some(old) = due.replace(at) {
            p.ready.remove(&(old, id));
        }
        p.ready.insert((at, id));
    }

    fn remove(&mut self, id: u64) {
        let Some((function, due)) = self.calls.remove(&id) else {
            return;
        };
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let Some(p) = self.functions.get_mut(&function) else {
            return;
        };
        p.arrivals.remove(&id);
        if let Some(due) = due {
            p.ready.remove(&(due, id));
        }
        if p.arrivals.is_empty() {
            self.functions.remove(&function);
        }
    }
}

// === the writer thread ===

/// Runs batches until every sender is gone. A committed batch's new calls join the index
/// before any of its operations is answered; an enqueue that failed gives its place under
/// the bound back (`queued`).
fn write_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Batched>,
    index: &Mutex<Index>,
    queued: &AtomicU64,
    commits: &AtomicU64,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let answers = run_batch(&mut conn, &batch);
        commits.fetch_add(1, Ordering::Relaxed);
        // The index's lock is taken once, at the batch's first stored call.
        let mut locked = None;
        for (b, answer) in batch.iter().zip(&answers) {
            match (&b.op, answer) {
                (Op::Enqueue(call), Ok(Answer::Id(id))) => {
                    let index = locked
                        .get_or_insert_with(|| index.lock().expect("queue index mutex poisoned"));
                    let name = index.name(&call.function);
                    index.insert(name, *id, call.arrived_unix_ms, 0);
                }
                (Op::Enqueue(_), _) => {
                    queued.fetch_sub(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
        drop(locked);
        for (b, answer) in batch.into_iter().zip(answers) {
            let _ = b.reply.send(answer);
        }
    }
}

/// Runs `batch` in one transaction; if the commit fails, every operation fails (and the
/// transaction is rolled back).
///
/// `BEGIN` and `COMMIT` are prepared once like every other statement (rusqlite's
/// `Transaction` parses both for every batch: a twelfth of the writer's instructions).
fn run_batch(conn: &mut Connection, batch: &[Batched]) -> Vec<Result<Answer, StoreError>> {
    if let Err(e) = conn.prepare_cached("BEGIN").and_then(|mut s| s.execute([])) {
        return batch.iter().map(|_| Err(backend(&e))).collect();
    }
    // The batch's enqueues share one INSERT statement, taken from the cache once (a cache
    // lookup per row was a tenth of the writer's instructions).
    let mut insert = None;
    let answers: Vec<Result<Answer, StoreError>> = batch
        .iter()
        .map(|b| {
            apply(conn, &mut insert, &b.op).map_err(|e| match e {
                Failure::Sql(e) => backend(&e),
                Failure::Store(e) => e,
            })
        })
        .collect();
    drop(insert);
    match conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]))
    {
        Ok(_) => answers,
        Err(e) => {
            if !conn.is_autocommit() {
                if let Err(r) = conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %r, "async queue: cannot roll back a failed commit");
                }
            }
            answers.into_iter().map(|_| Err(backend(&e))).collect()
        }
    }
}

enum Failure {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

/// Stores an enqueued call with `insert`, prepared (from the cache) at its first use.
fn insert_call<'c>(
    tx: &'c Connection,
    insert: &mut Option<rusqlite::CachedStatement<'c>>,
    call: &EncodedCall,
) -> Result<Answer, Failure> {
    let stmt = match insert {
        Some(s) => s,
        None => insert.insert(tx.prepare_cached(
            "INSERT INTO calls (function, call_id, arrived_ms, record) VALUES (?1, ?2, ?3, ?4)",
        )?),
    };
    stmt.execute(params![
        call.function,
        call.call_id,
        call.arrived_unix_ms as i64,
        call.record
    ])?;
    Ok(Answer::Id(tx.last_insert_rowid() as u64))
}

/// Runs `op`; an enqueue with the batch's `insert`.
fn apply<'c>(
    tx: &'c Connection,
    insert: &mut Option<rusqlite::CachedStatement<'c>>,
    op: &Op,
) -> Result<Answer, Failure> {
    Ok(match op {
        Op::Enqueue(call) => return insert_call(tx, insert, call),
        Op::Read(ids) => {
            let mut q = tx.prepare_cached("SELECT record, attempts FROM calls WHERE id = ?1")?;
            let mut out = Vec::with_capacity(ids.len());
            for &id in ids {
                let row: Option<(Vec<u8>, i64)> = q
                    .query_row(params![id as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((record, attempts)) = row {
                    out.push((id, record, attempts as u32));
                }
            }
            Answer::Records(out)
        }
        Op::Ack(id) => {
            tx.prepare_cached("DELETE FROM calls WHERE id = ?1")?
                .execute(params![*id as i64])?;
            Answer::Done
        }
        Op::Retry {
            id,
            attempts,
            at_unix_ms,
        } => {
            tx.prepare_cached("UPDATE calls SET attempts = ?2, due_ms = ?3 WHERE id = ?1")?
                .execute(params![*id as i64, *attempts as i64, *at_unix_ms as i64])?;
            Answer::Done
        }
        Op::Bury {
            id,
            attempts,
            status,
            reason,
            now_unix_ms,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO dead
                     (id, function, call_id, arrived_ms, attempts, failed_ms, status, reason, record)
                 SELECT id, function, call_id, arrived_ms, ?2, ?3, ?4, ?5, record
                 FROM calls WHERE id = ?1",
            )?
            .execute(params![
                *id as i64,
                *attempts as i64,
                *now_unix_ms as i64,
                *status as i64,
                reason
            ])?;
            tx.prepare_cached("DELETE FROM calls WHERE id = ?1")?
                .execute(params![*id as i64])?;
            Answer::Done
        }
        Op::ListDead(function) => {
            let mut q = tx.prepare_cached(
                "SELECT id, call_id, function, attempts, arrived_ms, failed_ms, status, reason
                 FROM dead WHERE ?1 IS NULL OR function = ?1 ORDER BY id",
            )?;
            let rows = q.query_map(params![function], |r| {
                Ok(DeadLetter {
                    id: r.get::<_, i64>(0)? as u64,
                    call_id: r.get(1)?,
                    function: r.get(2)?,
                    attempts: r.get::<_, i64>(3)? as u32,
                    arrived_unix_ms: r.get::<_, i64>(4)? as u64,
                    failed_unix_ms: r.get::<_, i64>(5)? as u64,
                    status: r.get::<_, i64>(6)? as u16,
                    reason: r.get(7)?,
                })
            })?;
            Answer::Dead(rows.collect::<Result<_, _>>()?)
        }
        Op::Replay(id) => {
            let row: Option<(String, i64)> = tx
                .prepare_cached("SELECT function, arrived_ms FROM dead WHERE id = ?1")?
                .query_row(params![*id as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((function, arrived)) = row else {
                return Err(Failure::Store(StoreError::NotFound(*id)));
            };
            tx.prepare_cached(
                "INSERT INTO calls (id, function, call_id, arrived_ms, attempts, due_ms, record)
                 SELECT id, function, call_id, arrived_ms, 0, 0, record FROM dead WHERE id = ?1",
            )?
            .execute(params![*id as i64])?;
            tx.prepare_cached("DELETE FROM dead WHERE id = ?1")?
                .execute(params![*id as i64])?;
            Answer::Replayed(function, arrived as u64)
        }
        Op::Discard(id) => {
            let function: Option<String> = tx
                .prepare_cached("DELETE FROM dead WHERE id = ?1 RETURNING function")?
                .query_row(params![*id as i64], |r| r.get(0))
                .optional()?;
            let Some(function) = function else {
                return Err(Failure::Store(StoreError::NotFound(*id)));
            };
            Answer::Discarded(function)
        }
    })
}

fn backend(e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn stopped() -> StoreError {
    StoreError::Backend("the queue's writer has stopped".into())
}

fn unexpected() -> StoreError {
    StoreError::Backend("the queue's writer answered another operation".into())
}
