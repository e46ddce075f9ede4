//! The route table: function key -> [`FunctionHandle`], an immutable map behind `ArcSwap`.
//!
//! Readers (every invocation) do one `load()` and a hash lookup with a borrowed
//! [`KeyRef`]: no lock, no allocation. Writers (the control plane: deploy, delete) copy the map,
//! change it and publish it with one `store`, serialised by a mutex that readers never touch.
//!
//! A [`FunctionHandle`] outlives snapshots: it holds the function's counters (demand, metrics),
//! and its [`FunctionState`] (ready replicas, desired count, scale settings) is itself one
//! immutable value behind `ArcSwap`, replaced whole by [`FunctionHandle::publish`]. So a
//! reader sees the replicas and the desired count of the same instant, never half an update.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hashbrown::HashMap;
use tokio::sync::Notify;

use crate::dataplane::replica::Replica;
use crate::metrics::FunctionMetrics;
use crate::names::{FunctionKey, KeyRef};

pub type RouteMap = HashMap<FunctionKey, Arc<FunctionHandle>>;

#[derive(Default)]
pub struct Routes {
    map: ArcSwap<RouteMap>,
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
}

/// Per-function demand, counted on the request path with relaxed atomics.
#[derive(Debug, Default)]
pub struct Demand {
    /// Requests being forwarded or streamed now.
    pub inflight: AtomicU64,
    /// Requests held waiting for a ready replica now.
    pub queued: AtomicU64,
    /// Requests received since start (monotonic).
    pub arrivals: AtomicU64,
    /// `clock::now_ms()` of the last arrival.
    pub last_arrival_ms: AtomicU64,
}

pub struct FunctionHandle {
    key: FunctionKey,
    label: Box<str>,
    state: ArcSwap<FunctionState>,
    pub demand: Demand,
    pub metrics: FunctionMetrics,
    ready: Notify,
    cold_start_requested: AtomicBool,
    removed: AtomicBool,
}

// === impl Routes ===

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle for `key`, if the function exists. Lock-free; clones one `Arc`.
    #[inline]
    pub fn get(&self, key: KeyRef<'_>) -> Option<Arc<FunctionHandle>> {
        self.map.load().get(&key).cloned()
    }

    /// A snapshot of every function (metrics exposition, listings).
    pub fn snapshot(&self) -> Arc<RouteMap> {
        self.map.load_full()
    }

    /// Returns the handle for `key`, creating it (with no replicas) if absent.
    pub fn upsert(&self, key: &FunctionKey) -> Arc<FunctionHandle> {
        if let Some(h) = self.get(key.as_ref()) {
            return h;
        }
        let _w = self.writer.lock().expect("route writer mutex poisoned");
        let current = self.map.load();
        if let Some(h) = current.get(key) {
            return h.clone();
        }
        let handle = Arc::new(FunctionHandle::new(key.clone()));
        let mut next = RouteMap::clone(&current);
        next.insert(key.clone(), handle.clone());
        self.map.store(Arc::new(next));
        handle
    }

    /// Removes `key`; requests already holding the handle finish on it.
    pub fn remove(&self, key: &FunctionKey) -> Option<Arc<FunctionHandle>> {
        let _w = self.writer.lock().expect("route writer mutex poisoned");
        let current = self.map.load();
        if !current.contains_key(key) {
            return None;
        }
        let mut next = RouteMap::clone(&current);
        let removed = next.remove(key);
        self.map.store(Arc::new(next));
        if let Some(h) = &removed {
            // Wake held requests so they see the function is gone.
            h.removed.store(true, Ordering::Release);
            h.ready.notify_waiters();
        }
        removed
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
    pub fn publish_desired(&self, desired: u64, cold_start_replicas: u64) {
        let cur = self.state.load_full();
        self.publish(FunctionState {
            replicas: cur.replicas.clone(),
            desired,
            cold_start_replicas,
        });
    }

    /// Returns true exactly once per cold period: the caller must ask for a scale-up.
    pub fn claim_cold_start(&self) -> bool {
        !self.cold_start_requested.swap(true, Ordering::AcqRel)
    }

    /// Lets a failed cold start be retried by the next held request.
    pub fn release_cold_start(&self) {
        self.cold_start_requested.store(false, Ordering::Release);
    }

    /// True once the function was removed from the route table.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub fn ready_notify(&self) -> &Notify {
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
