//! The per-function catalog watcher: a blocking-query loop, a diff, a readiness gate.
//!
//! Loop: read the service at the last index (blocking up to [`WatchConfig::wait`]); on an
//! answer, track the index ([`IndexTracker`]: floor 1, reset when it goes backwards), diff
//! the instances into the [`ReplicaSet`] and publish when the ready set changed; on an error,
//! keep everything and retry after a jittered exponential [`Backoff`]. A token bucket
//! ([`Bucket`]) spaces the queries when the index churns (table-wide indexes wake every
//! watcher on any registration change). While instances are pending (Nomad's catalog), they
//! are probed every [`WatchConfig::probe_interval`] alongside the held query.
//!
//! Time-dependent pieces are pure and tested on their own; the loop only wires them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{probe, Catalog, Instance, Publisher};
use crate::client::QueryOptions;
use crate::dataplane::Replica;

/// Tunables of a watcher.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// How long one blocking query may be held by the server.
    pub wait: Duration,
    /// How often pending instances are probed.
    pub(crate) probe_interval: Duration,
    /// First retry delay after an error, doubling up to `backoff_max` (jittered).
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    /// Queries allowed back to back, and the refill period of one more.
    pub burst: u32,
    pub(crate) refill: Duration,
}

/// Stops the watcher when dropped.
pub(crate) struct WatchHandle {
    task: JoinHandle<()>,
}

/// The last index seen, with the blocking-query rules.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexTracker {
    pub last: u64,
}

/// Jittered exponential backoff.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Backoff {
    failures: u32,
}

/// A token bucket: `burst` queries at once, then one per `refill`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    burst: f64,
    refill: Duration,
    at: Instant,
}

/// Ready replicas (routed) and pending instances (waiting for a good probe).
#[derive(Default)]
pub(crate) struct ReplicaSet {
    ready: BTreeMap<(String, SocketAddr), Arc<Replica>>,
    pending: BTreeMap<(String, SocketAddr), Instance>,
}

// === impl WatchConfig ===

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(60),
            probe_interval: Duration::from_millis(100),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            burst: 4,
            refill: Duration::from_millis(250),
        }
    }
}

// === impl WatchHandle ===

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `service` for the function behind `publisher`.
pub(crate) fn spawn_watcher(
    catalog: Arc<Catalog>,
    service: String,
    publisher: Arc<Publisher>,
    cfg: WatchConfig,
) -> WatchHandle {
    let task = tokio::spawn(async move { run(catalog, service, publisher, cfg).await });
    WatchHandle { task }
}

async fn run(catalog: Arc<Catalog>, service: String, publisher: Arc<Publisher>, cfg: WatchConfig) {
    let function = publisher.handle().label().to_string();
    let mut set = ReplicaSet::from_ready(&publisher.replicas());
    let mut index = IndexTracker::default();
    let mut backoff = Backoff::default();
    let mut bucket = Bucket::new(cfg.burst, cfg.refill, Instant::now());
    let mut next_at = Instant::now();
    let mut failing = false;
    loop {
        let q = QueryOptions::blocking(index.last, cfg.wait);
        let start_at = next_at;
        let fetch = async {
            tokio::time::sleep_until(start_at).await;
            catalog.instances(&service, q).await
        };
        tokio::pin!(fetch);
        let result = loop {
            tokio::select! {
                r = &mut fetch => break r,
                _ = tokio::time::sleep(cfg.probe_interval), if set.has_pending() => {
                    if set.probe_pending().await {
                        tracing::debug!(function, service, ready = set.ready.len(), pending = set.pending.len(), "instance became ready");
                        publisher.set_replicas(set.ready());
                    }
                }
            }
        };
        match result {
            Ok(answer) => {
                if failing {
                    tracing::info!(
                        function,
                        service,
                        catalog = catalog.name(),
                        "catalog reachable again"
                    );
                    failing = false;
                }
                backoff.reset();
                if index.observe(answer.index) {
                    tracing::info!(
                        function,
                        service,
                        "catalog index went backwards; re-reading"
                    );
                }
                publisher.forget_gone(&answer.value);
                publisher.set_canaries(&answer.value);
                let mut changed = set.apply(&answer.value, catalog.needs_probe());
                if set.has_pending() {
                    changed |= set.probe_pending().await;
                }
                if changed {
                    tracing::debug!(
                        function,
                        service,
                        ready = set.ready.len(),
                        pending = set.pending.len(),
                        "replica set changed"
                    );
                    publisher.set_replicas(set.ready());
                }
                let now = Instant::now();
                next_at = now + bucket.take(now);
            }
            Err(e) => {
                let delay = backoff.next(cfg.backoff_base, cfg.backoff_max, fastrand::f64());
                if failing {
                    tracing::debug!(function, service, error = %e, ?delay, "catalog read failed");
                } else {
                    tracing::warn!(function, service, error = %e, ?delay,
                        "catalog read failed; the last known replicas keep serving");
                    failing = true;
                }
                next_at = Instant::now() + delay;
            }
        }
    }
}

// === impl IndexTracker ===

impl IndexTracker {
    /// Records an answer's index; true when it went backwards (the next read is then
    /// non-blocking, `index=0`).
    pub fn observe(&mut self, index: u64) -> bool {
        if index < self.last {
            self.last = 0;
            true
        } else {
            self.last = index.max(1);
            false
        }
    }
}

// === impl Backoff ===

impl Backoff {
    /// The delay before the next try: `base * 2^failures` capped at `max`, jittered into
    /// `[d/2, d]` by `rand` in `[0, 1)`.
    pub(crate) fn next(&mut self, base: Duration, max: Duration, rand: f64) -> Duration {
        let exp = base.saturating_mul(1u32 << self.failures.min(16)).min(max);
        self.failures = self.failures.saturating_add(1);
        exp / 2 + exp.mul_f64(rand.clamp(0.0, 1.0) / 2.0)
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

// === impl Bucket ===

impl Bucket {
    pub(crate) fn new(burst: u32, refill: Duration, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            burst,
            refill,
            at: now,
        }
    }

    /// Takes a token; returns how long to wait before using it.
    pub(crate) fn take(&mut self, now: Instant) -> Duration {
        if !self.refill.is_zero() {
            let gained =
                now.saturating_duration_since(self.at).as_secs_f64() / self.refill.as_secs_f64();
            self.tokens = (self.tokens + gained).min(self.burst);
        } else {
            self.tokens = self.burst;
        }
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            self.refill.mul_f64(-self.tokens)
        }
    }
}

// === impl ReplicaSet ===

impl ReplicaSet {
    /// Starts from replicas already published (a restarted watcher keeps them).
    pub(crate) fn from_ready(ready: &[Arc<Replica>]) -> Self {
        Self {
            ready: ready
                .iter()
                .map(|r| ((r.id().to_string(), r.addr()), r.clone()))
                .collect(),
            pending: BTreeMap::new(),
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The ready replicas, in a stable order.
    pub(crate) fn ready(&self) -> Vec<Arc<Replica>> {
        self.ready.values().cloned().collect()
    }

    /// Diffs the catalog's answer into the set. Survivors keep their `Arc<Replica>`; new
    /// instances are ready at once unless `gate` (then pending until probed). True when the
    /// ready set changed.
    pub(crate) fn apply(&mut self, instances: &[Instance], gate: bool) -> bool {
        let keys: BTreeMap<(String, SocketAddr), &Instance> = instances
            .iter()
            .map(|i| ((i.id.clone(), i.addr), i))
            .collect();
        let before = self.ready.len();
        self.ready.retain(|k, _| keys.contains_key(k));
        let mut changed = self.ready.len() != before;
        self.pending.retain(|k, _| keys.contains_key(k));
        for (k, inst) in keys {
            if self.ready.contains_key(&k) || self.pending.contains_key(&k) {
                continue;
            }
            if gate {
                self.pending.insert(k, inst.clone());
            } else {
                self.ready
                    .insert(k, Replica::new(inst.id.as_str(), inst.addr));
                changed = true;
            }
        }
        changed
    }

    /// Probes every pending instance at once; those that answer join the ready set.
    pub(crate) async fn probe_pending(&mut self) -> bool {
        let keys: Vec<(String, SocketAddr)> = self.pending.keys().cloned().collect();
        let results =
            futures_util::future::join_all(keys.iter().map(|(_, addr)| probe::probe(*addr))).await;
        let mut changed = false;
        for (k, ok) in keys.into_iter().zip(results) {
            if ok {
                if let Some(inst) = self.pending.remove(&k) {
                    self.ready
                        .insert(k, Replica::new(inst.id.as_str(), inst.addr));
                    changed = true;
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, port: u16) -> Instance {
        Instance {
            id: id.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            canary: false,
        }
    }

    #[test]
    fn index_rules() {
        let mut t = IndexTracker::default();
        assert!(!t.observe(0));
        assert_eq!(t.last, 1, "floored to 1");
        assert!(!t.observe(40));
        assert_eq!(t.last, 40);
        assert!(!t.observe(40), "same index: a timeout, keep blocking");
        assert!(t.observe(7), "backwards: reset");
        assert_eq!(t.last, 0);
        assert!(!t.observe(7));
        assert_eq!(t.last, 7);
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let (base, max) = (Duration::from_millis(200), Duration::from_secs(2));
        let mut b = Backoff::default();
        assert_eq!(b.next(base, max, 0.0), Duration::from_millis(100));
        assert_eq!(b.next(base, max, 0.999_999).as_millis(), 399);
        for _ in 0..40 {
            let d = b.next(base, max, 1.0);
            assert!(d <= max);
        }
        assert_eq!(b.next(base, max, 0.0), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.next(base, max, 0.0), Duration::from_millis(100));
    }

    #[test]
    fn bucket_spaces_queries_after_the_burst() {
        // Time is passed in, so no clock runs here.
        let now = Instant::now();
        let mut b = Bucket::new(2, Duration::from_millis(500), now);
        assert_eq!(b.take(now), Duration::ZERO);
        assert_eq!(b.take(now), Duration::ZERO);
        assert_eq!(b.take(now), Duration::from_millis(500));
        let later = now + Duration::from_secs(10);
        assert_eq!(b.take(later), Duration::ZERO, "refilled");
    }

    #[test]
    fn survivors_keep_their_replica() {
        let mut s = ReplicaSet::default();
        assert!(s.apply(&[inst("a", 1), inst("b", 2)], false));
        let a = s.ready().into_iter().find(|r| r.id() == "a").unwrap();
        assert!(!s.apply(&[inst("b", 2), inst("a", 1)], false), "same set");
        assert!(s.apply(&[inst("a", 1), inst("c", 3)], false));
        let ready = s.ready();
        assert_eq!(ready.len(), 2);
        let a2 = ready.iter().find(|r| r.id() == "a").unwrap();
        assert!(Arc::ptr_eq(&a, a2), "a kept its Arc (pool, pending count)");
        // A new allocation on a reused port is a new replica.
        assert!(s.apply(&[inst("d", 1)], false));
        assert!(!Arc::ptr_eq(&a, &s.ready()[0]));
    }

    #[tokio::test]
    async fn gated_instances_wait_for_a_good_probe() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let mut s = ReplicaSet::default();
        assert!(!s.apply(&[inst("a", port)], true));
        assert!(s.has_pending() && s.ready().is_empty());
        // Listening but not answering HTTP: not ready.
        drop(l);
        assert!(!s.probe_pending().await);
        assert!(s.has_pending());
        // Gone from the catalog: forgotten.
        assert!(!s.apply(&[], true));
        assert!(!s.has_pending());
    }
}
