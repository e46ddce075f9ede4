//! The route table: function key -> [`FunctionHandle`], immutable shards behind `ArcSwap`.
//!
//! Readers (every invocation) hash a borrowed [`KeyRef`] once, pick one of [`SHARDS`] shards
//! by that hash, do one `load()` and probe the shard's `HashTable` with the same hash: no
//! lock, no allocation, and a cost that stays flat from 1 to 100k functions
//! (`benches/dataplane.rs`, group `route_lookup`). Writers (the control plane: deploy,
//! delete) copy only the shard they change and publish it with one `store`, serialised by a
//! mutex that readers never touch. Sharding is what makes 1,000 route changes per second
//! cheap with 10,000 functions deployed: an update copies ~40 `Arc`s instead of the whole map
//! (group `route_update` compares both; `loadtest/run` shows p99 under that churn).
//! Single-threaded, a lookup costs about what a `RwLock<HashMap<String, _>>` does (cache
//! misses on the shard, the handle and the key dominate); the lock-free read is what keeps it
//! there when every core looks up at once (`arcswap_contended` vs `rwlock_hashmap_contended`;
//! the figures are in docs/performance.md).
//!
//! Each lookup sees one consistent shard; [`Routes::snapshot`] (scrapes, listings) is the
//! union of the shards' current values, read one after the other.
//!
//! A [`FunctionHandle`] outlives snapshots: it holds the function's counters (demand, metrics),
//! and its [`FunctionState`] (ready replicas, desired count, scale settings) is itself one
//! immutable value behind `ArcSwap`, replaced whole by [`FunctionHandle::publish`]. So a
//! reader sees the replicas and the desired count of the same instant, never half an update.
//!
//! [`Demand`] is what the scaler reads (through a `DemandSource`): per function, one packed
//! word holds the requests in flight (held ones included) and the running integral of that
//! count over time, so the scaler gets the exact time-weighted mean concurrency of any
//! interval from two samples, not a noisy point sample. A request costs one `fetch_add` at
//! its start and one at its end (as a plain in-flight counter would), plus the arrival count:
//! no lock, no allocation. `benches/demand.rs` measures it against the counters it replaced.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hashbrown::{DefaultHashBuilder, HashTable};
use tokio::sync::Notify;

use crate::dataplane::replica::Replica;
use crate::metrics::FunctionMetrics;
use crate::model::names::{FunctionKey, KeyRef};
use crate::model::scale::ScaleSettings;

/// Shards of the route table (a power of two).
pub(crate) const SHARDS: usize = 256;

/// One shard: handles indexed by the hash of their key.
type Shard = HashTable<Arc<FunctionHandle>>;

pub struct Routes {
    hasher: DefaultHashBuilder,
    shards: Box<[ArcSwap<Shard>]>,
    writer: Mutex<()>,
}

/// What the data plane knows of one function; published by its provider.
#[derive(Debug, Clone, Default)]
pub struct FunctionState {
    /// Replicas in rotation: ready, not draining. Order is irrelevant.
    pub replicas: Arc<[Arc<Replica>]>,
    /// Desired replica count (0 = scaled to zero: requests are held and wake a scale-up).
    pub desired: u64,
    /// Replicas a cold start asks for: `max(1, com.openfaas.scale.min)`.
    pub cold_start_replicas: u64,
    /// The `com.openfaas.scale.*` settings, parsed once when the provider publishes.
    pub scale: ScaleSettings,
}

/// Bits of the packed demand word that count requests in flight (up to 2^20 - 1 at once).
const INFLIGHT_BITS: u32 = 20;
const INFLIGHT_MASK: u64 = (1 << INFLIGHT_BITS) - 1;
/// The busy-time integral is kept modulo 2^44 microseconds: differences of two samples are
/// exact while they are below that (about 2.9e5 requests in flight for a whole minute).
pub const BUSY_MASK: u64 = (1 << (64 - INFLIGHT_BITS)) - 1;

/// Per-function demand, counted on the request path with relaxed atomics.
///
/// The packed word: low [`INFLIGHT_BITS`] = requests in flight now (from arrival to the end
/// of the response, held ones included); high bits = `sum(end_us) - sum(start_us)` over every
/// request, wrapping, where a request still in flight has no end yet. So at time `t` the
/// integral of the in-flight count since start is `high + inflight * t` (mod 2^44), and both
/// halves are read in one load, never torn.
#[derive(Debug, Default)]
pub struct Demand {
    concurrency: AtomicU64,
    /// Requests held waiting for a ready replica now (a subset of in flight).
    pub queued: AtomicU64,
    /// Requests received since start (monotonic).
    pub arrivals: AtomicU64,
    /// `clock::now_ms()` of the last arrival.
    pub last_arrival_ms: AtomicU64,
}

/// One reading of a function's [`Demand`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemandSample {
    /// When it was read, `clock::now_us()`.
    pub at_us: u64,
    /// Requests in flight, held ones included.
    pub inflight: u64,
    /// Requests held waiting for a ready replica.
    pub queued: u64,
    /// Requests received since start.
    pub arrivals: u64,
    /// `clock::now_ms()` of the last arrival (0: none yet).
    pub last_arrival_ms: u64,
    /// Integral of the in-flight count over time since start, in microseconds, modulo
    /// 2^44: `busy_between(a, b) / (b.at_us - a.at_us)` is the mean concurrency.
    pub busy_us: u64,
}

pub struct FunctionHandle {
    key: FunctionKey,
    label: Box<str>,
    state: ArcSwap<FunctionState>,
    pub demand: Demand,
    pub metrics: FunctionMetrics,
    /// Queued (async) calls of this function the gateway's dispatcher is delivering now:
    /// read by every enqueue (`queue::Dispatcher::notify_enqueued`) without a lock.
    pub async_inflight: AtomicUsize,
    ready: Notify,
    cold_start_requested: AtomicBool,
    removed: AtomicBool,
}

// === impl Routes ===

impl Default for Routes {
    fn default() -> Self {
        Self {
            hasher: DefaultHashBuilder::default(),
            shards: (0..SHARDS).map(|_| ArcSwap::default()).collect(),
            writer: Mutex::new(()),
        }
    }
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn locate(&self, key: KeyRef<'_>) -> (u64, &ArcSwap<Shard>) {
        let hash = self.hasher.hash_one(key);
        // Bits 40..48: independent of the bucket index (low bits) and of hashbrown's tag (top
        // 7 bits) inside the shard.
        let shard = (hash >> 40) as usize & (SHARDS - 1);
        (hash, &self.shards[shard])
    }

    /// The handle for `key`, if the function exists. Lock-free; clones one `Arc`.
    #[inline]
    pub fn get(&self, key: KeyRef<'_>) -> Option<Arc<FunctionHandle>> {
        let (hash, shard) = self.locate(key);
        shard.load().find(hash, |h| h.key.as_ref() == key).cloned()
    }

    /// Every function now (metrics exposition, listings); each shard is read once.
    pub fn snapshot(&self) -> Vec<Arc<FunctionHandle>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.load().iter().cloned());
        }
        out
    }

    /// Number of functions in the table.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.load().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the handle for `key`, creating it (with no replicas) if absent.
    pub fn upsert(&self, key: &FunctionKey) -> Arc<FunctionHandle> {
        if let Some(h) = self.get(key.as_ref()) {
            return h;
        }
        let _w = self.writer.lock().expect("route writer mutex poisoned");
        let (hash, shard) = self.locate(key.as_ref());
        let current = shard.load();
        if let Some(h) = current.find(hash, |h| h.key == *key) {
            return h.clone();
        }
        let handle = Arc::new(FunctionHandle::new(key.clone()));
        let mut next = Shard::clone(&current);
        next.insert_unique(hash, handle.clone(), |h| {
            self.hasher.hash_one(h.key.as_ref())
        });
        shard.store(Arc::new(next));
        handle
    }

    /// Removes `key`; requests already holding the handle finish on it.
    pub fn remove(&self, key: &FunctionKey) -> Option<Arc<FunctionHandle>> {
        let _w = self.writer.lock().expect("route writer mutex poisoned");
        let (hash, shard) = self.locate(key.as_ref());
        let current = shard.load();
        current.find(hash, |h| h.key == *key)?;
        let mut next = Shard::clone(&current);
        let removed = next
            .find_entry(hash, |h| h.key == *key)
            .ok()
            .map(|e| e.remove().0);
        shard.store(Arc::new(next));
        if let Some(h) = &removed {
            // Wake held requests so they see the function is gone.
            h.removed.store(true, Ordering::Release);
            h.ready.notify_waiters();
        }
        removed
    }
}

// === impl Demand ===

impl Demand {
    /// Counts a request arriving at `now_us` (`clock` microseconds).
    #[inline]
    pub fn begin(&self, now_us: u64) {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
        self.last_arrival_ms.store(now_us / 1000, Ordering::Relaxed);
        // high -= now_us, low += 1: the low field is below its maximum, so nothing carries.
        self.concurrency.fetch_add(
            (now_us.wrapping_neg() << INFLIGHT_BITS).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    /// Counts the end of a request begun earlier, at `end_us`.
    #[inline]
    pub fn end(&self, end_us: u64) {
        // high += end_us, low -= 1: written as one wrapping add; the low field is >= 1.
        self.concurrency
            .fetch_add((end_us << INFLIGHT_BITS).wrapping_sub(1), Ordering::Relaxed);
    }

    /// Requests in flight now, held ones included.
    pub fn inflight(&self) -> u64 {
        self.concurrency.load(Ordering::Relaxed) & INFLIGHT_MASK
    }

    /// Reads every counter; `at_us` is taken after the packed word, so a request that began
    /// in between adds at most its own few microseconds.
    pub fn sample(&self) -> DemandSample {
        let word = self.concurrency.load(Ordering::Relaxed);
        let at_us = crate::sys::clock::now_us();
        self.sample_word(word, at_us)
    }

    fn sample_word(&self, word: u64, at_us: u64) -> DemandSample {
        let inflight = word & INFLIGHT_MASK;
        let busy_us =
            (word >> INFLIGHT_BITS).wrapping_add(inflight.wrapping_mul(at_us)) & BUSY_MASK;
        DemandSample {
            at_us,
            inflight,
            queued: self.queued.load(Ordering::Relaxed),
            arrivals: self.arrivals.load(Ordering::Relaxed),
            last_arrival_ms: self.last_arrival_ms.load(Ordering::Relaxed),
            busy_us,
        }
    }
}

// === impl DemandSample ===

impl DemandSample {
    /// Microseconds of in-flight time (request x microsecond) between `earlier` and `self`.
    pub(crate) fn busy_since(&self, earlier: &DemandSample) -> u64 {
        self.busy_us.wrapping_sub(earlier.busy_us) & BUSY_MASK
    }
}

// === impl FunctionHandle ===

impl FunctionHandle {
    pub fn new(key: FunctionKey) -> Self {
        let label = key.to_string().into_boxed_str();
        Self {
            key,
            label,
            state: ArcSwap::from_pointee(FunctionState::default()),
            demand: Demand::default(),
            metrics: FunctionMetrics::default(),
            async_inflight: AtomicUsize::new(0),
            ready: Notify::new(),
            cold_start_requested: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        }
    }

    pub fn key(&self) -> &FunctionKey {
        &self.key
    }

    /// `name.namespace`, the `function_name` metric label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The current state; one atomic load, no allocation.
    #[inline]
    pub fn state(&self) -> arc_swap::Guard<Arc<FunctionState>> {
        self.state.load()
    }

    pub fn state_full(&self) -> Arc<FunctionState> {
        self.state.load_full()
    }

    /// Replaces the function's state in one store and wakes held requests (they re-check the
    /// new state). Called by providers only.
    pub fn publish(&self, state: FunctionState) {
        let desired = state.desired;
        let previous = self.state.swap(Arc::new(state));
        if desired > 0 || previous.desired > 0 {
            // Up (or going down from up): the next cold period starts unclaimed. Clearing on
            // the way down too drops a claim a request made from a stale snapshot while the
            // function was up, which would otherwise block every later scale from zero.
            self.cold_start_requested.store(false, Ordering::Release);
        }
        self.ready.notify_waiters();
    }

    /// Updates only the desired count, keeping replicas (scale calls answer at once).
    #[cfg(test)]
    pub(crate) fn publish_desired(&self, desired: u64, cold_start_replicas: u64) {
        let cur = self.state.load_full();
        self.publish(FunctionState {
            replicas: cur.replicas.clone(),
            desired,
            cold_start_replicas,
            scale: cur.scale,
        });
    }

    /// Returns true exactly once per cold period: the caller must ask for a scale-up.
    pub(crate) fn claim_cold_start(&self) -> bool {
        !self.cold_start_requested.swap(true, Ordering::AcqRel)
    }

    /// Lets a failed cold start be retried by the next held request.
    pub(crate) fn release_cold_start(&self) {
        self.cold_start_requested.store(false, Ordering::Release);
    }

    /// True once the function was removed from the route table.
    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub(crate) fn ready_notify(&self) -> &Notify {
        &self.ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_borrowed_key() {
        let routes = Routes::new();
        let k = FunctionKey::new("echo", "").unwrap();
        let h = routes.upsert(&k);
        assert!(Arc::ptr_eq(&h, &routes.upsert(&k)));
        let found = routes.get(KeyRef::parse_segment("echo", "")).unwrap();
        assert!(Arc::ptr_eq(&h, &found));
        assert!(routes
            .get(KeyRef::parse_segment("echo.openfaas-fn", ""))
            .is_some());
        assert!(routes
            .get(KeyRef::parse_segment("echo.other", ""))
            .is_none());
        assert!(routes.remove(&k).is_some());
        assert!(routes.get(k.as_ref()).is_none());
        assert!(routes.remove(&k).is_none());
    }

    #[test]
    fn many_functions_across_shards() {
        let routes = Routes::new();
        let keys: Vec<FunctionKey> = (0..2000)
            .map(|i| {
                FunctionKey::new(&format!("f{i}"), if i % 2 == 0 { "" } else { "team" }).unwrap()
            })
            .collect();
        let handles: Vec<_> = keys.iter().map(|k| routes.upsert(k)).collect();
        assert_eq!(routes.len(), 2000);
        assert_eq!(routes.snapshot().len(), 2000);
        for (k, h) in keys.iter().zip(&handles) {
            assert!(Arc::ptr_eq(h, &routes.get(k.as_ref()).unwrap()));
        }
        for k in keys.iter().step_by(3) {
            assert!(routes.remove(k).unwrap().is_removed());
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(routes.get(k.as_ref()).is_some(), i % 3 != 0, "{k}");
        }
        assert_eq!(routes.len(), 2000 - 667);
    }

    #[test]
    fn demand_integrates_inflight_over_time() {
        let d = Demand::default();
        let at = |us| d.sample_word(d.concurrency.load(Ordering::Relaxed), us);
        let s0 = at(1_000);
        d.begin(1_000);
        d.begin(2_000);
        let s1 = at(3_000);
        assert_eq!(s1.inflight, 2);
        assert_eq!(s1.busy_since(&s0), 2_000 + 1_000);
        d.end(4_000);
        assert_eq!(d.inflight(), 1);
        let s2 = at(5_000);
        // 1 ms more of two requests, then 1 ms of one.
        assert_eq!(s2.busy_since(&s1), 2_000 + 1_000);
        d.end(5_000);
        let s3 = at(9_000);
        assert_eq!(s3.inflight, 0);
        assert_eq!(s3.busy_since(&s2), 0);
        assert_eq!(s3.arrivals, 2);
        assert_eq!(s3.last_arrival_ms, 2);
    }

    proptest::proptest! {
        /// Whatever the interleaving of begins and ends, the integral between two samples is
        /// the sum of each request's overlap with the interval.
        #[test]
        fn demand_integral_matches_the_overlaps(
            reqs in proptest::collection::vec((0u64..1_000_000, 0u64..1_000_000), 0..40),
            a in 0u64..2_000_000,
            len in 0u64..2_000_000,
        ) {
            let base = u64::MAX / 2; // far from zero: exercises the wrapping arithmetic
            let b = a + len;
            let mut events: Vec<(u64, bool)> = Vec::new();
            for &(start, dur) in &reqs {
                events.push((base + start, true));
                events.push((base + start + dur, false));
            }
            // Ends before begins at the same instant cannot underflow: each end follows its begin.
            events.sort_by_key(|&(t, begin)| (t, begin));
            let d = Demand::default();
            let mut samples = [None, None];
            // Replay in time order, sampling at a and b.
            let mut pending = [(base + a, 0usize), (base + b, 1usize)];
            pending.sort();
            let mut next = 0;
            for &(t, begin) in &events {
                while next < pending.len() && pending[next].0 < t {
                    let (at, slot) = pending[next];
                    samples[slot] = Some(d.sample_word(d.concurrency.load(Ordering::Relaxed), at));
                    next += 1;
                }
                if begin { d.begin(t) } else { d.end(t) }
            }
            while next < pending.len() {
                let (at, slot) = pending[next];
                samples[slot] = Some(d.sample_word(d.concurrency.load(Ordering::Relaxed), at));
                next += 1;
            }
            let (sa, sb) = (samples[0].unwrap(), samples[1].unwrap());
            let want: u64 = reqs
                .iter()
                .map(|&(start, dur)| {
                    let (s, e) = (base + start, base + start + dur);
                    e.min(base + b).saturating_sub(s.max(base + a))
                })
                .sum();
            proptest::prop_assert_eq!(sb.busy_since(&sa), want);
        }
    }

    #[test]
    fn cold_start_is_claimed_once_until_scaled() {
        let h = FunctionHandle::new(FunctionKey::new("f", "").unwrap());
        assert!(h.claim_cold_start());
        assert!(!h.claim_cold_start());
        h.publish_desired(1, 1);
        assert!(h.claim_cold_start());
    }

    /// A request that read `desired == 0` just before a scale-up claims the cold start; the
    /// cold-start task then finds the function up and does nothing. When the function is
    /// later scaled to zero, the next held request must be able to claim again.
    #[test]
    fn stale_claim_does_not_outlive_a_scale_to_zero() {
        let h = FunctionHandle::new(FunctionKey::new("f", "").unwrap());
        h.publish_desired(1, 1);
        assert!(h.claim_cold_start(), "stale request claims while up");
        h.publish_desired(0, 1); // scaled to zero
        assert!(h.claim_cold_start());
        // While cold, republishing (replica set changes) keeps the claim.
        h.publish_desired(0, 1);
        assert!(!h.claim_cold_start());
    }
}
