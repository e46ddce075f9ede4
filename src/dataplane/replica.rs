//! One replica: an HTTP endpoint speaking the watchdog contract, wherever it runs.
//!
//! A replica carries the only mutable per-replica state of the data plane, all atomics:
//! `pending` (requests picked and not yet finished, the p2c load) and `throttled_until`
//! (set when it answered 429; p2c avoids it until then). Its keep-alive pool lives here too,
//! so a replica that survives a snapshot rebuild keeps its connections and counts.
//!
//! Draining without loss: a provider that stops a replica first publishes a set without it,
//! then calls [`Replica::drain`] and waits for `pending() == 0`. A request that picked it
//! from an older snapshot increments `pending` and then checks `is_draining` (both SeqCst,
//! as the drainer's store and load are): either the request sees the flag and picks again,
//! or the drainer sees the request pending and waits for it. Nothing is sent to a stopped
//! replica.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::dataplane::clock;
use crate::dataplane::pool::Pool;

/// How long a replica that answered 429 stays out of p2c's first choice.
pub const THROTTLE_MS: u64 = 250;
/// How long a replica that refused a connection is skipped (until its provider republishes).
pub const DOWN_MS: u64 = 1000;

pub struct Replica {
    id: Box<str>,
    addr: SocketAddr,
    pending: AtomicUsize,
    throttled_until_ms: AtomicU64,
    down_until_ms: AtomicU64,
    draining: AtomicBool,
    pool: Pool,
}

/// Decrements a replica's pending count when dropped (end of the response body, or error).
pub struct PendingGuard {
    replica: Arc<Replica>,
}

// === impl Replica ===

impl Replica {
    pub fn new(id: impl Into<Box<str>>, addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            id: id.into(),
            addr,
            pending: AtomicUsize::new(0),
            throttled_until_ms: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            pool: Pool::new(addr),
        })
    }

    /// The instance name (process or allocation id), as shown in logs.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests currently picked for this replica and not finished.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn is_throttled(&self, now_ms: u64) -> bool {
        self.throttled_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Marks the replica as saturated (it answered 429) for [`THROTTLE_MS`].
    pub fn throttle(&self) {
        self.throttled_until_ms
            .store(clock::now_ms() + THROTTLE_MS, Ordering::Relaxed);
    }

    /// True while the replica is presumed gone (it refused a connection recently).
    pub fn is_down(&self, now_ms: u64) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Marks the replica as unreachable for [`DOWN_MS`]: p2c skips it meanwhile.
    pub fn mark_down(&self) {
        self.down_until_ms
            .store(clock::now_ms() + DOWN_MS, Ordering::Relaxed);
    }

    /// Counts one request against this replica until the guard drops. The caller checks
    /// [`Replica::is_draining`] afterwards and gives the replica up if it is set.
    pub fn start(self: &Arc<Self>) -> PendingGuard {
        self.pending.fetch_add(1, Ordering::SeqCst);
        PendingGuard {
            replica: self.clone(),
        }
    }

    /// Marks the replica as leaving: requests that still pick it (from an older snapshot)
    /// go elsewhere. Call after publishing a set without it, then wait for `pending() == 0`
    /// with [`Replica::pending_after_drain`].
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// True once [`Replica::drain`] was called.
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Pending requests, read with the ordering that pairs with [`Replica::start`]: after
    /// `drain`, once this reads 0 no request will be sent to the replica any more.
    pub fn pending_after_drain(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("pending", &self.pending())
            .finish()
    }
}

// === impl PendingGuard ===

impl PendingGuard {
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.replica.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draining_replica_is_seen_by_late_pickers() {
        let r = Replica::new("r", "127.0.0.1:1".parse().unwrap());
        let g = r.start();
        assert!(!r.is_draining());
        r.drain();
        assert_eq!(r.pending_after_drain(), 1, "the drainer waits for it");
        drop(g);
        let late = r.start();
        assert!(late.replica().is_draining(), "a late picker backs off");
        drop(late);
        assert_eq!(r.pending_after_drain(), 0);
    }
}
