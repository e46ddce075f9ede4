//! Which embedded store keeps the async queue (issue 14): redb, fjall or SQLite (rusqlite,
//! bundled), each committing durably, on the queue's own workload, beside a baseline that is
//! the floor of any durable log on this disk: appending the records to a plain file and
//! `fdatasync`ing it.
//!
//! Durable commit, per store: redb `Durability::Immediate` (its default: data pages and the
//! header of its one file, then one `fdatasync`; two with quick-repair); fjall a write batch
//! with `PersistMode::SyncAll` (the journal `fsync`ed; fjall's default only reaches the OS's
//! buffers); SQLite `journal_mode=WAL` + `synchronous=FULL` (the WAL synced at every commit).
//! Variants that a queue built on each would consider: redb with quick-repair (no full repair
//! on open after a crash, for a second `fdatasync` per commit); SQLite with its checkpoints on
//! a second connection's thread (`wal_autocheckpoint=0`, PASSIVE every 50 ms) instead of
//! inside whichever commit crosses 1,000 WAL pages; fjall taking from an in-memory cursor
//! instead of the head (take+ack only).
//!
//! Cases, each on fresh stores under the temp dir. Within a case the stores take turns, in
//! [`ROUNDS`] slices each, until each has spent [`CASE_SECS`] in its commits: the machine is
//! shared and its disk's flush latency drifts (0.2 to 8 ms), so back-to-back runs of one store
//! after another would compare the drift more than the stores.
//! - `enqueue SIZE xB`: B records of SIZE (1 KiB, 64 KiB) keyed by a rising sequence number,
//!   one durable commit per batch of B (1, 8, 64): what a writer thread draining a channel
//!   commits at a time.
//! - `group commit, 32 producers`: 32 threads each enqueue one 1 KiB record and wait for its
//!   commit (the gateway's 202); one writer thread drains the channel (up to 64 a commit).
//!   Latency is the producer's wait, from its send to the reply.
//! - `take+ack K`: 20,000 queued records; take the oldest K (read them) and delete them in one
//!   durable commit, until the budget or the queue runs out.
//! - Recovery: a child process enqueues 100,000 1 KiB records (1,000 a commit) and is killed
//!   with SIGKILL (what `kill -9` leaves on disk); then the time to open the store, and to
//!   open and read every record; then the same after a clean close.
//!
//! Columns: records/s and commits/s over the time spent in commits (record generation is
//! outside it; in the group-commit case, wall time); `KiB written/rec` is what the process
//! (with its background threads) sent to the block layer (`write_bytes` of `/proc/self/io`,
//! page granularity, so fsync-per-commit rewrites of a partial page count again) per record;
//! `file KiB/rec` the growth of the store's allocated blocks per record; p50/p99 the commit
//! latency (the producer's wait in the group-commit case). fjall flushes and compacts on
//! background threads, so some of its writes can land in another store's slice.
//!
//! Run: `cargo bench --features store-bench --bench async_store` (about a minute; append
//! `-- group` to run only the cases whose name holds the word). Results and the choice:
//! benches/README.md.
#![allow(clippy::unwrap_used)] // test and tool code: a failed unwrap is a failed run

use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Each store spends at most this long in a case's commits (recovery's writes excepted)...
const CASE_SECS: f64 = 1.5;
/// ...in this many slices, the stores taking turns.
const ROUNDS: u32 = 6;
/// A case also stops once it has committed this much payload (64 KiB records fill disks).
const CASE_BYTES: u64 = 192 << 20;
const KIB: usize = 1024;
/// Records queued before a take+ack case.
const ACK_PREFILL: u64 = 20_000;
/// Records written before the recovery case's kill.
const RECOVERY_RECORDS: u64 = 100_000;
const RECOVERY_BATCH: u64 = 1_000;
const PRODUCERS: usize = 32;
const MAX_BATCH: usize = 64;
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
/// Set in the child process of the recovery case: which store, and where.
const CHILD_ENV: &str = "FAASGATE_STORE_BENCH_CHILD";
const CHILD_DIR_ENV: &str = "FAASGATE_STORE_BENCH_DIR";

const REDB_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("q");

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// A plain append-only file, `fdatasync` per commit: the floor.
    Raw,
    Redb,
    /// redb with quick-repair: two-phase commit plus the allocator state saved at every
    /// commit, so that reopening after a crash need not walk the whole file.
    RedbQuickRepair,
    Fjall,
    /// fjall taking from an in-memory cursor (the key after the last one taken) rather than
    /// from the head, past the tombstones of what was acked: how a fjall queue would dodge them.
    FjallCursor,
    Sqlite,
    /// SQLite with `wal_autocheckpoint=0` and a second connection checkpointing (PASSIVE)
    /// every [`CHECKPOINT_EVERY`] on its own thread, so no commit waits for a checkpoint.
    SqliteBgCheckpoint,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Raw => "baseline: file+fdatasync",
            Kind::Redb => "redb 5.0",
            Kind::RedbQuickRepair => "redb 5.0 quick-repair",
            Kind::Fjall => "fjall 3.1",
            Kind::FjallCursor => "fjall 3.1, take from a cursor",
            Kind::Sqlite => "SQLite (rusqlite 0.43)",
            Kind::SqliteBgCheckpoint => "SQLite, checkpoints off-thread",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Redb => "redb",
            Kind::RedbQuickRepair => "redb-qr",
            Kind::Fjall => "fjall",
            Kind::FjallCursor => "fjall-cursor",
            Kind::Sqlite => "sqlite",
            Kind::SqliteBgCheckpoint => "sqlite-bg",
        }
    }

    fn from_tag(tag: &str) -> Kind {
        [
            Kind::Raw,
            Kind::Redb,
            Kind::RedbQuickRepair,
            Kind::Fjall,
            Kind::FjallCursor,
            Kind::Sqlite,
            Kind::SqliteBgCheckpoint,
        ]
        .into_iter()
        .find(|k| k.tag() == tag)
        .unwrap()
    }
}

/// One open store. Every mutating call is one durable commit.
enum Store {
    Raw(File),
    Redb {
        db: redb::Database,
        quick_repair: bool,
    },
    Fjall {
        db: fjall::Database,
        ks: fjall::Keyspace,
        /// Where the next take starts ([`Kind::FjallCursor`] only).
        cursor: Option<u64>,
    },
    Sqlite {
        conn: rusqlite::Connection,
        /// Held for its `Drop`: stops the checkpointer with the store.
        _checkpointer: Option<Checkpointer>,
    },
}

/// The off-thread checkpointer of [`Kind::SqliteBgCheckpoint`]; stops when dropped.
struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: PathBuf) -> Checkpointer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(1)).unwrap();
            conn.pragma_update(None, "synchronous", "FULL").unwrap();
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(CHECKPOINT_EVERY);
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    .unwrap();
            }
        });
        Checkpointer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Store {
    fn open(kind: Kind, dir: &Path) -> Store {
        fs::create_dir_all(dir).unwrap();
        match kind {
            Kind::Raw => Store::Raw(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("q.log"))
                    .unwrap(),
            ),
            Kind::Redb | Kind::RedbQuickRepair => {
                let db = redb::Database::create(dir.join("q.redb")).unwrap();
                let quick_repair = kind == Kind::RedbQuickRepair;
                let store = Store::Redb { db, quick_repair };
                // The table exists before the first take.
                store.redb_write(|_| {});
                store
            }
            Kind::Fjall | Kind::FjallCursor => {
                let db = fjall::Database::builder(dir.join("fjall")).open().unwrap();
                let ks = db
                    .keyspace("q", fjall::KeyspaceCreateOptions::default)
                    .unwrap();
                let cursor = (kind == Kind::FjallCursor).then_some(0);
                Store::Fjall { db, ks, cursor }
            }
            Kind::Sqlite | Kind::SqliteBgCheckpoint => {
                let path = dir.join("q.sqlite");
                let conn = rusqlite::Connection::open(&path).unwrap();
                let mode: String = conn
                    .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                    .unwrap();
                assert_eq!(mode, "wal");
                conn.pragma_update(None, "synchronous", "FULL").unwrap();
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS q (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)",
                    [],
                )
                .unwrap();
                let checkpointer = (kind == Kind::SqliteBgCheckpoint).then(|| {
                    conn.query_row("PRAGMA wal_autocheckpoint=0", [], |_| Ok(()))
                        .unwrap();
                    Checkpointer::start(path)
                });
                Store::Sqlite {
                    conn,
                    _checkpointer: checkpointer,
                }
            }
        }
    }

    fn redb_write(&self, f: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
        let Store::Redb { db, quick_repair } = self else {
            unreachable!()
        };
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(redb::Durability::Immediate).unwrap();
        tx.set_quick_repair(*quick_repair);
        {
            let mut t = tx.open_table(REDB_TABLE).unwrap();
            f(&mut t);
        }
        tx.commit().unwrap();
    }

    /// Stores `records` (sequence number, body) in one durable commit.
    fn enqueue(&mut self, records: &[(u64, &[u8])]) {
        match self {
            Store::Raw(file) => {
                let mut buf = Vec::with_capacity(records.iter().map(|r| r.1.len() + 12).sum());
                for (seq, body) in records {
                    buf.extend_from_slice(&seq.to_be_bytes());
                    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
                    buf.extend_from_slice(body);
                }
                file.write_all(&buf).unwrap();
                file.sync_data().unwrap();
            }
            Store::Redb { .. } => self.redb_write(|t| {
                for (seq, body) in records {
                    t.insert(*seq, *body).unwrap();
                }
            }),
            Store::Fjall { db, ks, .. } => {
                let mut batch = db.batch().durability(Some(fjall::PersistMode::SyncAll));
                for (seq, body) in records {
                    batch.insert(ks, seq.to_be_bytes(), *body);
                }
                batch.commit().unwrap();
            }
            Store::Sqlite { conn, .. } => {
                let tx = conn.transaction().unwrap();
                {
                    let mut ins = tx
                        .prepare_cached("INSERT INTO q (seq, body) VALUES (?1, ?2)")
                        .unwrap();
                    for (seq, body) in records {
                        ins.execute(rusqlite::params![*seq as i64, body]).unwrap();
                    }
                }
                tx.commit().unwrap();
            }
        }
    }

    /// Reads the oldest `k` records and deletes them in one durable commit; how many it took.
    fn take_ack(&mut self, k: usize) -> usize {
        match self {
            Store::Raw(_) => unreachable!("the baseline is a log: no take"),
            Store::Redb { .. } => {
                let mut n = 0;
                self.redb_write(|t| {
                    while n < k {
                        let Some((seq, body)) = t.pop_first().unwrap() else {
                            break;
                        };
                        black_box((seq.value(), body.value().len()));
                        n += 1;
                    }
                });
                n
            }
            Store::Fjall { db, ks, cursor } => {
                let mut batch = db.batch().durability(Some(fjall::PersistMode::SyncAll));
                let mut n = 0;
                let from = cursor.map_or([0; 8], u64::to_be_bytes);
                for guard in ks.range(from..).take(k) {
                    let (key, body) = guard.into_inner().unwrap();
                    black_box(body.len());
                    if let Some(c) = cursor.as_mut() {
                        *c = u64::from_be_bytes(key[..].try_into().unwrap()) + 1;
                    }
                    batch.remove(ks, key);
                    n += 1;
                }
                batch.commit().unwrap();
                n
            }
            Store::Sqlite { conn, .. } => {
                let tx = conn.transaction().unwrap();
                let (n, last) = {
                    let mut sel = tx
                        .prepare_cached("SELECT seq, body FROM q ORDER BY seq LIMIT ?1")
                        .unwrap();
                    let mut rows = sel.query([k as i64]).unwrap();
                    let (mut n, mut last) = (0, -1i64);
                    while let Some(row) = rows.next().unwrap() {
                        last = row.get(0).unwrap();
                        black_box(row.get_ref(1).unwrap().as_blob().unwrap().len());
                        n += 1;
                    }
                    (n, last)
                };
                tx.execute("DELETE FROM q WHERE seq <= ?1", [last]).unwrap();
                tx.commit().unwrap();
                n
            }
        }
    }

    /// Reads every record: (count, payload bytes).
    fn scan(&self) -> (u64, u64) {
        let (mut n, mut bytes) = (0u64, 0u64);
        match self {
            Store::Raw(_) => unreachable!("the baseline is a log: no scan"),
            Store::Redb { db, .. } => {
                use redb::{ReadableDatabase, ReadableTable};
                let tx = db.begin_read().unwrap();
                let t = tx.open_table(REDB_TABLE).unwrap();
                for e in t.iter().unwrap() {
                    let (_, v) = e.unwrap();
                    n += 1;
                    bytes += v.value().len() as u64;
                }
            }
            Store::Fjall { ks, .. } => {
                for guard in ks.iter() {
                    let (_, v) = guard.into_inner().unwrap();
                    n += 1;
                    bytes += v.len() as u64;
                }
            }
            Store::Sqlite { conn, .. } => {
                let mut sel = conn
                    .prepare("SELECT seq, body FROM q ORDER BY seq")
                    .unwrap();
                let mut rows = sel.query([]).unwrap();
                while let Some(row) = rows.next().unwrap() {
                    n += 1;
                    bytes += row.get_ref(1).unwrap().as_blob().unwrap().len() as u64;
                }
            }
        }
        (n, bytes)
    }
}

/// Distinct random record bodies of one size, cycled: random so that no store's compression
/// flatters it, many so that no two records in a commit (or an LZ4 window) are alike.
struct Bodies(Vec<Vec<u8>>);

impl Bodies {
    fn new(size: usize) -> Bodies {
        let count = (8 << 20) / size;
        Bodies(
            (0..count.max(64))
                .map(|_| {
                    let mut b = vec![0u8; size];
                    fastrand::fill(&mut b);
                    b
                })
                .collect(),
        )
    }

    fn get(&self, seq: u64) -> &[u8] {
        &self.0[seq as usize % self.0.len()]
    }
}

/// Bytes this process (all its threads) has sent to the block layer so far.
fn written_bytes() -> Option<u64> {
    let io = fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))?
        .trim()
        .parse()
        .ok()
}

/// The 1-minute load average: how busy the (shared) machine was.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Allocated bytes under `dir` (sparse preallocation does not count).
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                disk_usage(&e.path())
            } else {
                m.blocks() * 512
            }
        })
        .sum()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()
}

struct Row {
    kind: Kind,
    case: String,
    records: u64,
    commits: u64,
    secs: f64,
    written: Option<u64>,
    growth: i64,
    latency_us: Histogram<u64>,
}

impl Row {
    fn print(&self) -> String {
        let per = |b: f64| b / self.records.max(1) as f64 / KIB as f64;
        let written = self
            .written
            .map_or_else(|| "-".to_string(), |w| format!("{:.1}", per(w as f64)));
        format!(
            "| {} | {} | {:.0} | {:.0} | {} | {:.1} | {:.2} | {:.2} |",
            self.kind.name(),
            self.case,
            self.records as f64 / self.secs,
            self.commits as f64 / self.secs,
            written,
            per(self.growth as f64),
            self.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
            self.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        )
    }
}

/// A fresh directory for one case, removed when dropped.
struct CaseDir(PathBuf);

impl CaseDir {
    fn new(root: &Path, name: &str) -> CaseDir {
        let dir = root.join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        CaseDir(dir)
    }
}

impl Drop for CaseDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// One store's share of a case: its open store and what its slices measured.
struct Slot {
    kind: Kind,
    dir: PathBuf,
    store: Option<Store>,
    /// The next sequence number to enqueue.
    seq: u64,
    records: u64,
    commits: u64,
    /// Time in commits (wall time in the group-commit case).
    spent: Duration,
    written: Option<u64>,
    growth: i64,
    latency_us: Histogram<u64>,
    /// Set when the slot has nothing left to do (its payload cap, or an empty queue).
    done: bool,
}

impl Slot {
    fn new(root: &Path, kind: Kind, case: &str) -> Slot {
        let dir = root.join(format!("{}-{case}", kind.tag()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(kind, &dir);
        Slot {
            kind,
            dir,
            store: Some(store),
            seq: 0,
            records: 0,
            commits: 0,
            spent: Duration::ZERO,
            written: Some(0),
            growth: 0,
            latency_us: histogram(),
            done: false,
        }
    }

    fn store(&mut self) -> &mut Store {
        self.store.as_mut().unwrap()
    }

    /// Enqueues `n` records in commits of `batch`, unmeasured (a take+ack case's queue).
    fn fill(&mut self, bodies: &Bodies, n: u64, batch: u64) {
        while self.seq < n {
            let records: Vec<(u64, &[u8])> = (self.seq..self.seq + batch)
                .map(|s| (s, bodies.get(s)))
                .collect();
            self.store.as_mut().unwrap().enqueue(&records);
            self.seq += batch;
        }
    }

    /// Runs `step` (one commit: how many records, or None when there is nothing left to do)
    /// until this slot has spent `slice` more in commits; adds what the disk saw.
    fn run_slice(&mut self, slice: Duration, mut step: impl FnMut(&mut Slot) -> Option<u64>) {
        let (written0, usage0) = (written_bytes(), disk_usage(&self.dir));
        let until = self.spent + slice;
        while self.spent < until && !self.done {
            let t = Instant::now();
            let Some(n) = step(self) else {
                self.done = true;
                break;
            };
            let d = t.elapsed();
            self.spent += d;
            self.latency_us.record(micros(d)).unwrap();
            self.records += n;
            self.commits += 1;
        }
        self.measured(written0, usage0);
    }

    fn measured(&mut self, written0: Option<u64>, usage0: u64) {
        self.written = match (self.written, written_bytes(), written0) {
            (Some(sum), Some(now), Some(then)) => Some(sum + (now - then)),
            _ => None,
        };
        self.growth += disk_usage(&self.dir) as i64 - usage0 as i64;
    }

    fn row(&self, case: String) -> Row {
        Row {
            kind: self.kind,
            case,
            records: self.records,
            commits: self.commits,
            secs: self.spent.as_secs_f64(),
            written: self.written,
            growth: self.growth,
            latency_us: self.latency_us.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.store.take());
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Runs one case on every store, the stores taking turns in [`ROUNDS`] slices each, so that
/// each sees the same share of whatever else the machine (and its disk) is doing.
fn interleaved(slots: &mut [Slot], mut slice: impl FnMut(&mut Slot, Duration)) {
    let each = Duration::from_secs_f64(CASE_SECS / ROUNDS as f64);
    for _ in 0..ROUNDS {
        for slot in slots.iter_mut() {
            if !slot.done {
                slice(slot, each);
            }
        }
    }
}

fn enqueue_case(root: &Path, kinds: &[Kind], bodies: &Bodies, size: usize, batch: u64) -> Vec<Row> {
    let name = format!("enq-{size}-{batch}");
    let mut slots: Vec<Slot> = kinds.iter().map(|&k| Slot::new(root, k, &name)).collect();
    interleaved(&mut slots, |slot, each| {
        slot.run_slice(each, |slot| {
            if slot.seq * size as u64 >= CASE_BYTES {
                return None;
            }
            let records: Vec<(u64, &[u8])> = (slot.seq..slot.seq + batch)
                .map(|s| (s, bodies.get(s)))
                .collect();
            slot.store().enqueue(&records);
            slot.seq += batch;
            Some(batch)
        })
    });
    let case = format!("enqueue {}KiB x{batch}", size / KIB);
    slots.iter().map(|s| s.row(case.clone())).collect()
}

/// A request waiting for its commit: the body's index and where to say it is stored.
type Pending = (u64, mpsc::Sender<()>);

/// One slice of the group-commit case: [`PRODUCERS`] threads each enqueue a record and wait
/// for its commit until the slice ends; this thread is the writer draining their channel.
fn group_slice(slot: &mut Slot, bodies: &Bodies, each: Duration) {
    let (written0, usage0) = (written_bytes(), disk_usage(&slot.dir));
    let (tx, rx) = mpsc::sync_channel::<Pending>(PRODUCERS * 2);
    let started = Instant::now();
    let deadline = started + each;
    let producers: Vec<_> = (0..PRODUCERS as u64)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut lat = histogram();
                let (reply_tx, reply_rx) = mpsc::channel();
                let mut i = p;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    tx.send((i, reply_tx.clone())).unwrap();
                    reply_rx.recv().unwrap();
                    lat.record(micros(t.elapsed())).unwrap();
                    i += PRODUCERS as u64;
                }
                lat
            })
        })
        .collect();
    drop(tx);
    // The writer: block for one request, drain what else is waiting, commit, reply.
    let mut replies = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        replies.push(first);
        while replies.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => replies.push(p),
                Err(_) => break,
            }
        }
        let seq = slot.seq;
        let records: Vec<(u64, &[u8])> = replies
            .iter()
            .enumerate()
            .map(|(i, (body, _))| (seq + i as u64, bodies.get(*body)))
            .collect();
        slot.store().enqueue(&records);
        slot.seq += records.len() as u64;
        slot.records += records.len() as u64;
        slot.commits += 1;
        for (_, reply) in replies.drain(..) {
            let _ = reply.send(());
        }
    }
    slot.spent += started.elapsed();
    for p in producers {
        slot.latency_us.add(p.join().unwrap()).unwrap();
    }
    slot.measured(written0, usage0);
}

fn group_commit_case(root: &Path, kinds: &[Kind], bodies: &Bodies) -> Vec<Row> {
    let mut slots: Vec<Slot> = kinds.iter().map(|&k| Slot::new(root, k, "group")).collect();
    interleaved(&mut slots, |slot, each| group_slice(slot, bodies, each));
    slots
        .iter()
        .map(|s| {
            let mean = s.records as f64 / s.commits.max(1) as f64;
            s.row(format!(
                "group commit, {PRODUCERS} producers, 1KiB (mean batch {mean:.1})"
            ))
        })
        .collect()
}

fn take_ack_case(root: &Path, kinds: &[Kind], bodies: &Bodies, k: usize) -> Vec<Row> {
    let name = format!("ack-{k}");
    let mut slots: Vec<Slot> = kinds
        .iter()
        .map(|&kind| {
            let mut slot = Slot::new(root, kind, &name);
            slot.fill(bodies, ACK_PREFILL, RECOVERY_BATCH);
            slot
        })
        .collect();
    interleaved(&mut slots, |slot, each| {
        slot.run_slice(each, |slot| match slot.store().take_ack(k) {
            0 => None,
            n => Some(n as u64),
        })
    });
    let case = format!("take+ack {k} of {}k queued", ACK_PREFILL / 1000);
    slots.iter().map(|s| s.row(case.clone())).collect()
}

/// The recovery case's child: writes the records, says so, and waits to be killed.
fn child(kind: Kind, dir: &Path) -> ! {
    let bodies = Bodies::new(KIB);
    let mut store = Store::open(kind, dir);
    let mut seq = 0u64;
    while seq < RECOVERY_RECORDS {
        let records: Vec<(u64, &[u8])> = (seq..seq + RECOVERY_BATCH)
            .map(|s| (s, bodies.get(s)))
            .collect();
        store.enqueue(&records);
        seq += RECOVERY_BATCH;
    }
    println!("written");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}

struct Recovery {
    kind: Kind,
    write_secs: f64,
    size: u64,
    killed_open: Duration,
    killed_scan: Duration,
    clean_open: Duration,
    clean_scan: Duration,
}

fn recovery_case(root: &Path, kind: Kind) -> Recovery {
    let dir = CaseDir::new(root, &format!("{}-recovery", kind.tag()));
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, kind.tag())
        .env(CHILD_DIR_ENV, &dir.0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "written", "{}: the child failed", kind.name());
    let write_secs = started.elapsed().as_secs_f64();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let size = disk_usage(&dir.0);

    let timed = || {
        let t = Instant::now();
        let store = Store::open(kind, &dir.0);
        let open = t.elapsed();
        let (n, bytes) = store.scan();
        let scan = t.elapsed();
        assert_eq!(n, RECOVERY_RECORDS, "{}: records lost", kind.name());
        assert_eq!(bytes, RECOVERY_RECORDS * KIB as u64);
        (store, open, scan)
    };
    let (store, killed_open, killed_scan) = timed();
    drop(store); // a clean close
    let (store, clean_open, clean_scan) = timed();
    drop(store);
    Recovery {
        kind,
        write_secs,
        size,
        killed_open,
        killed_scan,
        clean_open,
        clean_scan,
    }
}

fn main() {
    if let Ok(tag) = std::env::var(CHILD_ENV) {
        let dir = PathBuf::from(std::env::var_os(CHILD_DIR_ENV).unwrap());
        child(Kind::from_tag(&tag), &dir);
    }
    // `cargo bench` passes `--bench`; a filter word runs only the cases whose name holds it.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |case: &str| filter.as_deref().map_or(true, |f| case.contains(f));

    let root = std::env::temp_dir().join(format!(
        "faasgate-async-store-bench-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    fs::create_dir_all(&root).unwrap();
    let _cleanup = CaseDir(root.clone());
    let small = Bodies::new(KIB);
    let large = Bodies::new(64 * KIB);
    let stores = [
        Kind::Raw,
        Kind::Redb,
        Kind::Fjall,
        Kind::Sqlite,
        Kind::SqliteBgCheckpoint,
    ];
    let with_qr = [
        Kind::Raw,
        Kind::Redb,
        Kind::RedbQuickRepair,
        Kind::Fjall,
        Kind::Sqlite,
        Kind::SqliteBgCheckpoint,
    ];
    let load_before = loadavg();
    let took = Instant::now();

    let mut rows = Vec::new();
    let mut show = |case_rows: Vec<Row>| {
        for row in case_rows {
            println!("{}", row.print());
            rows.push(row);
        }
    };
    if wanted("enqueue") {
        for batch in [1, 8, 64] {
            show(enqueue_case(&root, &with_qr, &small, KIB, batch));
        }
        for batch in [1, 8, 64] {
            show(enqueue_case(&root, &stores, &large, 64 * KIB, batch));
        }
    }
    if wanted("group") {
        show(group_commit_case(&root, &with_qr, &small));
    }
    if wanted("ack") {
        for k in [1, 64] {
            let kinds = [
                Kind::Redb,
                Kind::Fjall,
                Kind::FjallCursor,
                Kind::Sqlite,
                Kind::SqliteBgCheckpoint,
            ];
            show(take_ack_case(&root, &kinds, &small, k));
        }
    }
    let mut recovery = Vec::new();
    if wanted("recovery") {
        for kind in [
            Kind::Redb,
            Kind::RedbQuickRepair,
            Kind::Fjall,
            Kind::Sqlite,
            Kind::SqliteBgCheckpoint,
        ] {
            let r = recovery_case(&root, kind);
            println!("recovered: {} ({:.1} s)", kind.name(), r.write_secs);
            recovery.push(r);
        }
    }

    println!();
    println!(
        "async queue store, durable commits ({:.0} s; load average {load_before} before, {} after):",
        took.elapsed().as_secs_f64(),
        loadavg()
    );
    println!();
    println!("| store | case | records/s | commits/s | KiB written/rec | file KiB/rec | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{}", r.print());
    }
    if !recovery.is_empty() {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!();
        println!(
            "{}k records of 1 KiB, {} a commit; opened after SIGKILL, then after a clean close:",
            RECOVERY_RECORDS / 1000,
            RECOVERY_BATCH
        );
        println!();
        println!("| store | write s | size MiB | open after kill ms | + read all ms | open after close ms | + read all ms |");
        println!("|---|---|---|---|---|---|---|");
        for r in &recovery {
            println!(
                "| {} | {:.1} | {:.0} | {:.1} | {:.0} | {:.1} | {:.0} |",
                r.kind.name(),
                r.write_secs,
                r.size as f64 / (1 << 20) as f64,
                ms(r.killed_open),
                ms(r.killed_scan),
                ms(r.clean_open),
                ms(r.clean_scan)
            );
        }
    }
}
