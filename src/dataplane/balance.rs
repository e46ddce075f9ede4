//! Power of two choices over pending requests, per request, from a snapshot.
//!
//! `pick` takes `&[Arc<Replica>]` (the function's published, ready replicas) and needs no
//! `&mut`: two distinct random indices, keep the one with fewer pending requests. A replica
//! that answered 429 recently ("throttled") loses against one that did not; if both draws are
//! throttled a scan looks for any unthrottled replica before settling for the less loaded.
//! Only published replicas are candidates, so an unready replica is never picked; one that
//! refused a connection ("down") is skipped entirely, and `pick` answers `None` when every
//! replica is down (the caller then waits for the provider to publish a new set).
//!
//! ## Decision: our `&self` pick, not tower's `p2c::Balance`
//! tower's `p2c::Balance` needs `&mut self` (`poll_ready` then `call`), so sharing it between
//! connections takes a `Buffer`: a worker task and a channel hop per request, serialising every
//! pick through one task. `benches/dataplane.rs` (group `p2c_pick`: 64 tasks picking at once on
//! a 2-worker runtime, 8 replicas, each pick counted pending and completed) runs this pick over
//! the published snapshot beside round robin on a shared counter and tower's `Balance` behind
//! `Buffer`: this pick costs a little more than round robin (the second random draw and the
//! load comparison) and about a tenth of tower's (docs/performance.md has the figures). The
//! data plane therefore keeps this lock-free pick, which also needs no `Discover` stream:
//! replica-set changes arrive as a new snapshot (see `table`). Load-wise it is tower's
//! `PendingRequests` metric, and the spread test below and `loadtest/run`'s 3-replica check
//! show it balances.

use std::sync::Arc;

use crate::dataplane::replica::Replica;

/// Picks a replica for one request, or `None` when there is none.
#[inline]
pub fn pick(replicas: &[Arc<Replica>], now_ms: u64) -> Option<&Arc<Replica>> {
    pick_with(replicas, now_ms, |n| fastrand::usize(..n))
}

/// [`pick`] with an injected random source (tests, property tests).
#[inline]
pub(crate) fn pick_with(
    replicas: &[Arc<Replica>],
    now_ms: u64,
    mut rand_below: impl FnMut(usize) -> usize,
) -> Option<&Arc<Replica>> {
    match replicas.len() {
        0 => None,
        1 => (!replicas[0].is_down(now_ms)).then(|| &replicas[0]),
        n => {
            let a = rand_below(n);
            let mut b = rand_below(n - 1);
            if b >= a {
                b += 1;
            }
            let (ra, rb) = (&replicas[a], &replicas[b]);
            match (ra.is_down(now_ms), rb.is_down(now_ms)) {
                (false, false) => {}
                (false, true) => return Some(ra),
                (true, false) => return Some(rb),
                (true, true) => return replicas.iter().find(|r| !r.is_down(now_ms)),
            }
            let (ta, tb) = (ra.is_throttled(now_ms), rb.is_throttled(now_ms));
            match (ta, tb) {
                (false, true) => Some(ra),
                (true, false) => Some(rb),
                (true, true) => Some(
                    replicas
                        .iter()
                        .find(|r| !r.is_throttled(now_ms))
                        .unwrap_or(less_loaded(ra, rb)),
                ),
                (false, false) => Some(less_loaded(ra, rb)),
            }
        }
    }
}

#[inline]
fn less_loaded<'a>(a: &'a Arc<Replica>, b: &'a Arc<Replica>) -> &'a Arc<Replica> {
    if b.pending() < a.pending() {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::replica::PendingGuard;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    fn replicas(n: usize) -> Vec<Arc<Replica>> {
        (0..n)
            .map(|i| {
                Replica::new(
                    format!("r{i}"),
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                )
            })
            .collect()
    }

    #[test]
    fn empty_and_single() {
        assert!(pick(&[], 0).is_none());
        let r = replicas(1);
        assert_eq!(pick(&r, 0).unwrap().id(), "r0");
    }

    #[test]
    fn prefers_fewer_pending() {
        let r = replicas(2);
        let _busy: Vec<PendingGuard> = (0..5).map(|_| r[0].start()).collect();
        for _ in 0..100 {
            assert_eq!(pick(&r, 0).unwrap().id(), "r1");
        }
    }

    #[test]
    fn skips_down_replicas() {
        let r = replicas(3);
        r[0].mark_down();
        r[2].mark_down();
        let now = crate::sys::clock::now_ms();
        for _ in 0..100 {
            assert_eq!(pick(&r, now).unwrap().id(), "r1");
        }
        r[1].mark_down();
        assert!(pick(&r, now).is_none());
        assert!(pick(&r[..1], now).is_none());
    }

    #[test]
    fn avoids_throttled() {
        let r = replicas(3);
        r[0].throttle();
        r[1].throttle();
        let now = crate::sys::clock::now_ms();
        for _ in 0..100 {
            assert_eq!(pick(&r, now).unwrap().id(), "r2");
        }
    }

    /// Holding each picked request open (as a slow upstream would), p2c keeps the spread of
    /// pending requests tight: far tighter than the spread random picks would give.
    #[test]
    fn spreads_load_by_pending() {
        // Random draws: unseeded, a spread of 3 shows up now and then. Seeded, the test is
        // deterministic (the picks use this thread's fastrand generator).
        fastrand::seed(7);
        let r = replicas(4);
        let mut held = Vec::new();
        for _ in 0..400 {
            held.push(pick(&r, 0).unwrap().start());
        }
        let counts: Vec<usize> = r.iter().map(|x| x.pending()).collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 2, "pending spread too wide: {counts:?}");
        drop(held);
        assert!(r.iter().all(|x| x.pending() == 0));
    }

    proptest! {
        /// Whatever the loads and random draws, the pick is one of the published replicas and
        /// never has more pending requests than the other drawn candidate.
        #[test]
        fn pick_is_published_and_not_worse(loads in proptest::collection::vec(0usize..20, 2..8),
                                           draws in proptest::collection::vec(0usize..1000, 2)) {
            let r = replicas(loads.len());
            let _g: Vec<PendingGuard> = r.iter().zip(&loads)
                .flat_map(|(rep, &n)| (0..n).map(move |_| rep.start()))
                .collect();
            let mut it = draws.iter();
            let mut seen = Vec::new();
            let picked = pick_with(&r, 0, |n| { let v = it.next().unwrap() % n; seen.push(v); v }).unwrap();
            prop_assert!(r.iter().any(|x| Arc::ptr_eq(x, picked)));
            let a = seen[0];
            let b = if seen[1] >= a { seen[1] + 1 } else { seen[1] };
            prop_assert!(picked.pending() == r[a].pending().min(r[b].pending()));
        }
    }
}
