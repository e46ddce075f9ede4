//! One replica: an HTTP endpoint speaking the watchdog contract, wherever it runs.
//!
//! A replica carries the only mutable per-replica state of the data plane, all atomics:
//! `pending` (requests picked and not yet finished, the p2c load) and `throttled_until`
//! (set when it answered 429; p2c avoids it until then). Its keep-alive pool lives here too,
//! so a replica that survives a snapshot rebuild keeps its connections and counts.
//!
//! Draining is a handshake between the data plane and whoever stops the replica, so no
//! request is sent to a process being stopped: the data plane increments `pending`, then
//! reads `draining`; the stopper publishes a set without the replica, sets `draining`, then
//! waits for `pending` to reach 0. Both sides use `SeqCst`, so in the single total order either
//! the request sees `draining` (and picks again from the new set) or the stopper sees the
//! request's pending count (and waits for it). `replica::tests::drain_handshake` checks it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::http1::pool::Pool;
use crate::sys::clock;

/// How long a replica that answered 429 stays out of p2c's first choice.
pub(crate) const THROTTLE_MS: u64 = 250;
/// How long a replica that refused a connection is skipped (until its provider republishes).
pub(crate) const DOWN_MS: u64 = 1000;

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
        self.pending.load(Ordering::SeqCst)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn is_throttled(&self, now_ms: u64) -> bool {
        self.throttled_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Marks the replica as saturated (it answered 429) for [`THROTTLE_MS`].
    pub(crate) fn throttle(&self) {
        self.throttled_until_ms
            .store(clock::now_ms() + THROTTLE_MS, Ordering::Relaxed);
    }

    /// True while the replica is presumed gone (it refused a connection recently).
    pub(crate) fn is_down(&self, now_ms: u64) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Marks the replica as unreachable for [`DOWN_MS`]: p2c skips it meanwhile.
    pub(crate) fn mark_down(&self) {
        self.down_until_ms
            .store(clock::now_ms() + DOWN_MS, Ordering::Relaxed);
    }

    /// Counts one request against this replica until the guard drops. The caller must then
    /// check [`Replica::is_draining`] and pick again if it is set (see the module doc).
    pub fn start(self: &Arc<Self>) -> PendingGuard {
        self.pending.fetch_add(1, Ordering::SeqCst);
        PendingGuard {
            replica: self.clone(),
        }
    }

    /// Marks the replica as leaving: no new request may be sent to it. Call after publishing
    /// a set without it and before waiting for [`Replica::pending`] to reach 0.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Puts a drained replica back in rotation: the stop it was drained for did not happen
    /// (e.g. Nomad refused the scale call). Call before publishing a set that holds it again.
    pub(crate) fn undrain(&self) {
        self.draining.store(false, Ordering::SeqCst);
    }

    /// True once [`Replica::drain`] was called (and not undone by [`Replica::undrain`]).
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
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
    pub(crate) fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.replica.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Many rounds of a request racing a drain: whenever the request goes ahead (it did not
    /// see `draining`), the drainer must have seen its pending count.
    #[test]
    fn drain_handshake() {
        for _ in 0..2000 {
            let r = Replica::new("r", SocketAddr::from(([127, 0, 0, 1], 1)));
            let sent = Arc::new(AtomicBool::new(false));
            let (r2, sent2) = (r.clone(), sent.clone());
            let request = std::thread::spawn(move || {
                let guard = r2.start();
                // The guard lives until the join, after the drainer has looked.
                (!r2.is_draining()).then(|| {
                    sent2.store(true, Ordering::SeqCst);
                    guard
                })
            });
            r.drain();
            let seen_pending = r.pending() > 0;
            let _guard = request.join().unwrap();
            if sent.load(Ordering::SeqCst) {
                assert!(seen_pending, "a request slipped past a drain");
            }
        }
    }
}
