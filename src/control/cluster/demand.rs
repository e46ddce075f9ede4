//! Demand summed over gateways: the leader's [`DemandSource`].
//!
//! Each gateway counts its own share of every function's demand (`dataplane::table::Demand`:
//! cumulative arrivals and in-flight time, in-flight and held requests now). The leader pulls
//! a [`Report`] of those counters from every member each tick and [`ClusterDemand`] adds them
//! to its own, so the scaler decides on the sum through the same code a gateway alone uses.
//!
//! Why the sum is sound: the scaler only ever takes differences of cumulative counters
//! between two observations (arrivals, the in-flight integral), and differences add up. Each
//! member's counters are kept as *deltas* between its successive reports, accumulated in the
//! leader's frame: a member that joins adds nothing until its second report, one that leaves
//! or restarts (its counters go back) breaks nothing, and no gateway's clock is compared with
//! another's (a last arrival travels as "milliseconds ago").
//!
//! Invariants:
//! - **Unknown is never idle.** A member the leader expects (from membership) whose last
//!   report is older than `stale_after`, or that has not reported yet, makes every
//!   observation `complete: false`: the scaler may scale up on what it knows, never down.
//! - Observation is synchronous and cheap (one lock, not contended: the puller writes once a
//!   tick); nothing here is on the request path.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::control::scaler::source::{DemandSource, LocalDemand, Observation};
use crate::dataplane::table::BUSY_MASK;
use crate::dataplane::Routes;
use crate::model::names::FunctionKey;
use crate::sys::clock;

/// One gateway's demand counters, as it sends them to the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every function this gateway has seen a request for.
    pub functions: Vec<FunctionReport>,
}

/// One function's counters in a [`Report`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionReport {
    /// `name.namespace`.
    pub function: String,
    /// Requests in flight now, held ones included.
    pub inflight: u64,
    /// Requests held now, waiting for a ready replica.
    pub queued: u64,
    /// Requests received since the gateway started.
    pub arrivals: u64,
    /// Integral of the in-flight count over time, in microseconds, modulo 2^44.
    pub busy_us: u64,
    /// Milliseconds since the last arrival.
    pub idle_ms: u64,
}

impl Report {
    /// This gateway's counters now, from its route table.
    pub fn local(routes: &Routes) -> Self {
        let now_ms = clock::now_ms();
        let functions = routes
            .snapshot()
            .iter()
            .filter_map(|h| {
                let s = h.demand.sample();
                (s.arrivals > 0).then(|| FunctionReport {
                    function: h.key().to_string(),
                    inflight: s.inflight,
                    queued: s.queued,
                    arrivals: s.arrivals,
                    busy_us: s.busy_us,
                    idle_ms: now_ms.saturating_sub(s.last_arrival_ms),
                })
            })
            .collect();
        Self { functions }
    }
}

/// The leader's view of the members' demand, summed with its own.
pub struct ClusterDemand {
    local: LocalDemand,
    stale_after: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Members the leader expects reports from (this gateway excluded).
    expected: HashSet<String>,
    members: HashMap<String, Member>,
    /// Per function, the members' deltas accumulated in this gateway's frame.
    acc: HashMap<FunctionKey, Accumulated>,
}

#[derive(Default)]
struct Member {
    reported_at: Option<Instant>,
    functions: HashMap<FunctionKey, FunctionReport>,
    /// `clock::now_ms()` of the last arrival, per function, in this gateway's frame.
    last_arrival_ms: HashMap<FunctionKey, u64>,
}

#[derive(Default, Clone, Copy)]
struct Accumulated {
    arrivals: u64,
    busy_us: u64,
}

impl ClusterDemand {
    pub fn new(routes: Arc<Routes>, stale_after: Duration) -> Self {
        Self {
            local: LocalDemand::new(routes),
            stale_after,
            state: Mutex::new(State::default()),
        }
    }

    /// Sets the members reports are expected from (from membership). A member no longer
    /// listed is forgotten; a new one is unknown until it reports.
    pub fn set_members(&self, members: impl IntoIterator<Item = String>) {
        let mut s = self.lock();
        s.expected = members.into_iter().collect();
        let expected = s.expected.clone();
        s.members.retain(|id, _| expected.contains(id));
    }

    /// The members reports are expected from, sorted.
    pub fn expected(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().expected.iter().cloned().collect();
        v.sort();
        v
    }

    /// Folds in `member`'s report, received now.
    pub fn apply(&self, member: &str, report: Report) {
        let now = Instant::now();
        let now_ms = clock::now_ms();
        let mut s = self.lock();
        if !s.expected.contains(member) {
            return;
        }
        let State { members, acc, .. } = &mut *s;
        let m = members.entry(member.to_string()).or_default();
        let mut seen = HashSet::with_capacity(report.functions.len());
        for f in report.functions {
            // `name.namespace`, as `Display` writes it (a namespace holds no dot).
            let Ok(key) = FunctionKey::parse_segment(&f.function, "") else {
                continue;
            };
            if let Some(prev) = m.functions.get(&key) {
                let a = acc.entry(key.clone()).or_default();
                // Counters that went back: the member restarted; what it counted since is new.
                a.arrivals += if f.arrivals >= prev.arrivals {
                    f.arrivals - prev.arrivals
                } else {
                    f.arrivals
                };
                a.busy_us =
                    (a.busy_us + (f.busy_us.wrapping_sub(prev.busy_us) & BUSY_MASK)) & BUSY_MASK;
            }
            m.last_arrival_ms
                .insert(key.clone(), now_ms.saturating_sub(f.idle_ms));
            seen.insert(key.clone());
            m.functions.insert(key, f);
        }
        // A function the member no longer lists has nothing in flight there.
        for (key, f) in m.functions.iter_mut() {
            if !seen.contains(key) {
                f.inflight = 0;
                f.queued = 0;
            }
        }
        m.reported_at = Some(now);
    }

    /// Whether every expected member reported within `stale_after`.
    pub fn complete(&self) -> bool {
        let s = self.lock();
        self.complete_in(&s, Instant::now())
    }

    fn complete_in(&self, s: &State, now: Instant) -> bool {
        s.expected.iter().all(|id| {
            s.members
                .get(id)
                .and_then(|m| m.reported_at)
                .is_some_and(|at| now.duration_since(at) <= self.stale_after)
        })
    }

    /// Members expected and how many of them are known now.
    pub fn members(&self) -> (usize, usize) {
        let s = self.lock();
        let now = Instant::now();
        let known = s
            .expected
            .iter()
            .filter(|id| {
                s.members
                    .get(*id)
                    .and_then(|m| m.reported_at)
                    .is_some_and(|at| now.duration_since(at) <= self.stale_after)
            })
            .count();
        (s.expected.len(), known)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl DemandSource for ClusterDemand {
    fn observe(&self, out: &mut Vec<Observation>) {
        let start = out.len();
        self.local.observe(out);
        let s = self.lock();
        let complete = self.complete_in(&s, Instant::now());
        for obs in &mut out[start..] {
            obs.complete = complete;
            if let Some(a) = s.acc.get(&obs.key) {
                obs.demand.arrivals += a.arrivals;
                obs.demand.busy_us = (obs.demand.busy_us + a.busy_us) & BUSY_MASK;
            }
            for m in s.members.values() {
                if let Some(f) = m.functions.get(&obs.key) {
                    obs.demand.inflight += f.inflight;
                    obs.demand.queued += f.queued;
                }
                if let Some(at) = m.last_arrival_ms.get(&obs.key) {
                    obs.demand.last_arrival_ms = obs.demand.last_arrival_ms.max(*at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::table::DemandSample;

    fn key() -> FunctionKey {
        FunctionKey::new("f", "").unwrap()
    }

    fn report(inflight: u64, arrivals: u64, busy_us: u64) -> Report {
        Report {
            functions: vec![FunctionReport {
                function: key().to_string(),
                inflight,
                queued: 0,
                arrivals,
                busy_us,
                idle_ms: 5,
            }],
        }
    }

    fn observe(c: &ClusterDemand) -> Observation {
        let mut out = Vec::new();
        c.observe(&mut out);
        assert_eq!(out.len(), 1);
        out.pop().unwrap()
    }

    fn setup() -> (Arc<Routes>, ClusterDemand) {
        let routes = Arc::new(Routes::new());
        routes.upsert(&key());
        let c = ClusterDemand::new(routes.clone(), Duration::from_secs(1));
        (routes, c)
    }

    #[tokio::test(start_paused = true)]
    async fn members_deltas_add_to_the_local_counters() {
        let (routes, c) = setup();
        c.set_members(["b:8080".to_string(), "c:8080".to_string()]);
        // Local: one request in flight.
        routes
            .get(key().as_ref())
            .unwrap()
            .demand
            .begin(clock::now_us());
        let before: DemandSample = observe(&c).demand;
        // First reports set each member's baseline: only their in-flight counts show.
        c.apply("b:8080", report(2, 1000, 50_000));
        c.apply("c:8080", report(1, 10, 7));
        let o = observe(&c);
        assert!(o.complete);
        assert_eq!(o.demand.inflight, 1 + 2 + 1);
        assert_eq!(o.demand.arrivals, before.arrivals);
        // Second reports: their deltas are added.
        c.apply("b:8080", report(3, 1090, 150_000));
        c.apply("c:8080", report(0, 20, 1007));
        let o = observe(&c);
        assert_eq!(o.demand.inflight, 1 + 3);
        assert_eq!(o.demand.arrivals, before.arrivals + 90 + 10);
        let busy = (o.demand.busy_us.wrapping_sub(before.busy_us)) & BUSY_MASK;
        assert!(busy >= 100_000 + 1000, "{busy}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_member_counts_from_zero_and_wrapping_busy_time_adds_up() {
        let (_routes, c) = setup();
        c.set_members(["b".to_string()]);
        c.apply("b", report(0, 500, BUSY_MASK - 10));
        c.apply("b", report(0, 600, 20)); // the integral wrapped: +31
        let a = observe(&c).demand;
        c.apply("b", report(0, 5, 40)); // restarted: 5 new arrivals
        let b = observe(&c).demand;
        assert_eq!(b.arrivals - a.arrivals, 5);
        // No local traffic: the sums are the member's deltas alone.
        assert_eq!(a.arrivals, 100);
        assert_eq!(a.busy_us, 31);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_or_new_member_makes_the_view_incomplete() {
        let (_routes, c) = setup();
        assert!(observe(&c).complete, "alone: complete");
        c.set_members(["b".to_string()]);
        assert!(!observe(&c).complete, "b has not reported");
        c.apply("b", report(0, 1, 1));
        assert!(observe(&c).complete);
        assert_eq!(c.members(), (1, 1));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(!observe(&c).complete, "b is stale");
        assert_eq!(c.members(), (1, 0));
        c.apply("b", report(0, 2, 2));
        assert!(observe(&c).complete);
        // A member that left is forgotten, not unknown.
        c.set_members(Vec::new());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(observe(&c).complete);
        // Reports from members not expected are ignored.
        c.apply("z", report(9, 9, 9));
        assert_eq!(observe(&c).demand.inflight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_members_recent_arrival_counts_as_the_last_arrival() {
        let (_routes, c) = setup();
        c.set_members(["b".to_string()]);
        tokio::time::advance(Duration::from_secs(60)).await;
        c.apply("b", report(0, 1, 1));
        let o = observe(&c);
        // b saw a request 5 ms ago: the function is not idle.
        assert!(clock::now_ms().saturating_sub(o.demand.last_arrival_ms) <= 5);
    }

    #[test]
    fn the_local_report_lists_functions_with_traffic() {
        let routes = Routes::new();
        routes.upsert(&key());
        routes.upsert(&FunctionKey::new("quiet", "").unwrap());
        let h = routes.get(key().as_ref()).unwrap();
        h.demand.begin(clock::now_us());
        let r = Report::local(&routes);
        assert_eq!(r.functions.len(), 1);
        assert_eq!(r.functions[0].function, "f.openfaas-fn");
        assert_eq!((r.functions[0].inflight, r.functions[0].arrivals), (1, 1));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }
}
