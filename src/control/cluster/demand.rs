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
//! - **One report per member per tick, of the tick's instant.** The scaler gathers this
//!   source just before each observation ([`DemandSource::gather`]): the puller runs a round
//!   ([`ClusterDemand::round_wanted`]) and the scaler waits for it, at most a tick. So every
//!   tick's sample holds one fresh delta from each member, taken with the leader's own
//!   counters. On a timer of its own a round landed on either side of a tick by chance (a
//!   1-tick window held 0 or 2 rounds: 20 clients read as 21.7 in flight); pulled after each
//!   observation, the members' share was a tick older than the leader's own (a first call
//!   sized on part of a step, in `tests/it/scaler_sim.rs` split over 3 and 10 gateways).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::control::scaler::source::{DemandSource, LocalDemand, Observation};
use crate::dataplane::table::{DemandSample, BUSY_MASK};
use crate::dataplane::Routes;
use crate::model::names::FunctionKey;
use crate::sys::clock;

/// One gateway's demand counters, as it sends them to the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `true`: every function this gateway has seen a request for; `false`: only those whose
    /// counters changed since this gateway's previous report to the same leader (the others
    /// are as that report said).
    #[serde(default)]
    pub full: bool,
    pub functions: Vec<FunctionReport>,
}

/// What a member last reported to each leader that pulled from it, so that it sends a
/// leader only what changed. A few leaders at most are remembered (a leader change brings
/// a new one; the oldest is forgotten).
#[derive(Default)]
pub struct ReportBook {
    leaders: Mutex<Vec<(String, LastReported)>>,
}

/// Per function, the counters last reported to one leader (arrivals, busy time, in flight,
/// held).
type LastReported = HashMap<FunctionKey, [u64; 4]>;

/// Leaders remembered by a [`ReportBook`].
const BOOK_LEADERS: usize = 4;

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
    /// Every function's counters now, from this gateway's route table.
    pub fn local(routes: &Routes) -> Self {
        Self::build(routes, |_, _| true, true)
    }

    /// The report for `leader`: everything when `full` (or when this book has no record of
    /// that leader), else only the functions whose counters changed since its last report.
    pub fn for_leader(routes: &Routes, book: &ReportBook, leader: &str, full: bool) -> Self {
        let mut leaders = book.leaders.lock().unwrap_or_else(|e| e.into_inner());
        let at = leaders.iter().position(|(l, _)| l == leader);
        let full = full || at.is_none();
        let mut last = match at {
            Some(i) => leaders.remove(i).1,
            None => HashMap::new(),
        };
        if full {
            last.clear();
        }
        let report = Self::build(
            routes,
            |key, now| {
                let changed = last.get(key) != Some(&now);
                if changed {
                    last.insert(key.clone(), now);
                }
                changed
            },
            full,
        );
        leaders.push((leader.to_string(), last));
        if leaders.len() > BOOK_LEADERS {
            leaders.remove(0);
        }
        report
    }

    fn build(
        routes: &Routes,
        mut include: impl FnMut(&FunctionKey, [u64; 4]) -> bool,
        full: bool,
    ) -> Self {
        let now_ms = clock::now_ms();
        let functions = routes
            .snapshot()
            .iter()
            .filter_map(|h| {
                let s = h.demand.sample();
                let counters = [s.arrivals, s.busy_us, s.inflight, s.queued];
                (s.arrivals > 0 && include(h.key(), counters)).then(|| FunctionReport {
                    function: h.key().to_string(),
                    inflight: s.inflight,
                    queued: s.queued,
                    arrivals: s.arrivals,
                    busy_us: s.busy_us,
                    idle_ms: now_ms.saturating_sub(s.last_arrival_ms),
                })
            })
            .collect();
        Self { full, functions }
    }
}

/// The leader's view of the members' demand, summed with its own.
pub struct ClusterDemand {
    local: LocalDemand,
    stale_after: Duration,
    state: Mutex<State>,
    /// The scaler's request for a pull round, and the rounds ended so far: the leader pulls
    /// just before it observes, so its own counters and the members' are of one instant.
    pull_now: tokio::sync::Notify,
    rounds: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// Members the leader expects reports from (this gateway excluded).
    expected: HashSet<String>,
    members: HashMap<String, Member>,
    /// Per function, the members' figures summed: their counters' deltas accumulated in
    /// this gateway's frame, their latest in-flight and held counts, their latest arrival.
    /// Kept up to date as reports arrive, so an observation costs one lookup per function.
    acc: HashMap<FunctionKey, Accumulated>,
}

#[derive(Default)]
struct Member {
    reported_at: Option<Instant>,
    /// A full report was applied (partial ones are deltas on it).
    has_baseline: bool,
    functions: HashMap<FunctionKey, FunctionReport>,
}

/// One function's figures summed over the members: their counters' deltas accumulated in
/// the leader's frame, their latest in-flight and held counts, their latest arrival.
/// [`ClusterDemand`] keeps one per function; the scaler simulator (`tests/it/scaler_sim.rs`)
/// folds its gateways' reports into one directly.
#[derive(Debug, Default, Clone, Copy)]
pub struct Accumulated {
    arrivals: u64,
    busy_us: u64,
    inflight: u64,
    queued: u64,
    /// `clock::now_ms()` of the latest arrival any member reported (0: none).
    last_arrival_ms: u64,
}

impl Accumulated {
    /// Folds in a member's report `f` of the function, received at `now_ms` (on the scale of
    /// `clock::now_ms`); `prev` is that member's previous report of it (None: `f` is its
    /// baseline, of which only the in-flight and held counts and the last arrival count).
    /// `continuous`: `prev` is current, so the counters' growth since is this interval's
    /// (else `f` is a new baseline for them too).
    pub fn fold(
        &mut self,
        prev: Option<&FunctionReport>,
        continuous: bool,
        f: &FunctionReport,
        now_ms: u64,
    ) {
        if let Some(prev) = prev {
            if continuous {
                // Counters that went back: the member restarted; what it counted since is
                // new.
                self.arrivals += if f.arrivals >= prev.arrivals {
                    f.arrivals - prev.arrivals
                } else {
                    f.arrivals
                };
                self.busy_us =
                    (self.busy_us + (f.busy_us.wrapping_sub(prev.busy_us) & BUSY_MASK)) & BUSY_MASK;
            }
            self.inflight = self.inflight.saturating_sub(prev.inflight);
            self.queued = self.queued.saturating_sub(prev.queued);
        }
        self.inflight += f.inflight;
        self.queued += f.queued;
        if f.arrivals > 0 {
            self.last_arrival_ms = self.last_arrival_ms.max(now_ms.saturating_sub(f.idle_ms));
        }
    }

    /// Adds the members' figures to this gateway's own `demand`.
    pub fn add_to(&self, demand: &mut DemandSample) {
        demand.arrivals += self.arrivals;
        demand.busy_us = (demand.busy_us + self.busy_us) & BUSY_MASK;
        demand.inflight += self.inflight;
        demand.queued += self.queued;
        demand.last_arrival_ms = demand.last_arrival_ms.max(self.last_arrival_ms);
    }
}

impl ClusterDemand {
    pub fn new(routes: Arc<Routes>, stale_after: Duration) -> Self {
        Self {
            local: LocalDemand::new(routes),
            stale_after,
            state: Mutex::new(State::default()),
            pull_now: tokio::sync::Notify::new(),
            rounds: tokio::sync::watch::channel(0).0,
        }
    }

    /// Counts `store`'s waiting calls in the sum. Shared by every gateway (NATS), the store's
    /// backlog is the cluster's, counted once, here; a gateway's own embedded store holds its
    /// own calls only, and the members' are not in their reports (their dispatchers still
    /// wake a function at zero, through its cold start).
    pub fn count_backlog(&self, store: Arc<dyn crate::queue::CallStore>) {
        self.local.count_backlog(store);
    }

    /// Waits until the scaler asks for a pull round ([`DemandSource::gather`]), at most
    /// `fallback` (a gateway whose scaler is off still pulls, so that its members stay
    /// known). A request made while no one waits is kept for the next call.
    pub async fn round_wanted(&self, fallback: Duration) {
        let _ = tokio::time::timeout(fallback, self.pull_now.notified()).await;
    }

    /// Ends a pull round (made, or skipped by a gateway that does not lead).
    pub fn round_done(&self) {
        self.rounds.send_modify(|r| *r += 1);
    }

    /// Sets the members reports are expected from (from membership). A member no longer
    /// listed is forgotten; a new one is unknown until it reports.
    pub fn set_members(&self, members: impl IntoIterator<Item = String>) {
        let mut s = self.lock();
        s.expected = members.into_iter().collect();
        let State {
            expected,
            members,
            acc,
        } = &mut *s;
        members.retain(|id, m| {
            let keep = expected.contains(id);
            if !keep {
                // What a member that left had in flight is no longer anyone's.
                for (key, f) in &m.functions {
                    if let Some(a) = acc.get_mut(key) {
                        a.inflight = a.inflight.saturating_sub(f.inflight);
                        a.queued = a.queued.saturating_sub(f.queued);
                    }
                }
            }
            keep
        });
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
        let full = report.full;
        if !full && !m.has_baseline {
            // A partial report needs the full one it follows: ignored, so the next pull asks
            // for everything.
            return;
        }
        // Counters count since the member's previous report only when that report is
        // current: after a gap (the member was unknown, or this gateway did not lead and
        // pulled nothing), their growth spans the whole gap and, added at once, would read as
        // a burst of arrivals in one tick. Such a report is a new baseline.
        let continuous = m
            .reported_at
            .is_some_and(|at| now.duration_since(at) <= self.stale_after);
        let mut seen = HashSet::with_capacity(report.functions.len());
        for f in report.functions {
            // `name.namespace`, as `Display` writes it (a namespace holds no dot).
            let Ok(key) = FunctionKey::parse_segment(&f.function, "") else {
                continue;
            };
            acc.entry(key.clone())
                .or_default()
                .fold(m.functions.get(&key), continuous, &f, now_ms);
            if full {
                seen.insert(key.clone());
            }
            m.functions.insert(key, f);
        }
        if full {
            // A function a full report leaves out has nothing in flight there.
            for (key, f) in m.functions.iter_mut() {
                if !seen.contains(key) {
                    if let Some(a) = acc.get_mut(key) {
                        a.inflight = a.inflight.saturating_sub(f.inflight);
                        a.queued = a.queued.saturating_sub(f.queued);
                    }
                    f.inflight = 0;
                    f.queued = 0;
                }
            }
        }
        // (A function a partial report leaves out is as the member last reported it.)
        m.has_baseline = true;
        m.reported_at = Some(now);
    }

    /// Whether the next pull from `member` must ask for a full report: the leader has no
    /// current baseline for it (never pulled, or its last report is stale).
    pub fn needs_full(&self, member: &str) -> bool {
        let s = self.lock();
        let baseline = s.members.get(member).is_some_and(|m| m.has_baseline);
        !baseline || !self.known(&s, member, Instant::now())
    }

    /// Whether every expected member reported within `stale_after` of `now`.
    fn complete_in(&self, s: &State, now: Instant) -> bool {
        s.expected.iter().all(|id| self.known(s, id, now))
    }

    /// Whether `member` reported within `stale_after` of `now`.
    fn known(&self, s: &State, member: &str, now: Instant) -> bool {
        s.members
            .get(member)
            .and_then(|m| m.reported_at)
            .is_some_and(|at| now.duration_since(at) <= self.stale_after)
    }

    /// Members expected and how many of them are known now.
    pub fn members(&self) -> (usize, usize) {
        let s = self.lock();
        let now = Instant::now();
        let known = s
            .expected
            .iter()
            .filter(|id| self.known(&s, id, now))
            .count();
        (s.expected.len(), known)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl DemandSource for ClusterDemand {
    fn observe(&self, out: &mut Vec<Observation>) {
        let start = out.len();
        self.local.observe(out);
        let s = self.lock();
        let complete = self.complete_in(&s, Instant::now());
        for obs in &mut out[start..] {
            obs.complete = complete;
            if let Some(a) = s.acc.get(&obs.key) {
                a.add_to(&mut obs.demand);
            }
        }
    }

    async fn gather(&self, within: Duration) {
        let mut rounds = self.rounds.subscribe();
        let before = *rounds.borrow_and_update();
        self.pull_now.notify_one();
        let _ = tokio::time::timeout(within, rounds.wait_for(|r| *r > before)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FunctionKey {
        FunctionKey::new("f", "").unwrap()
    }

    fn report(inflight: u64, arrivals: u64, busy_us: u64) -> Report {
        Report {
            full: true,
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
        // b leaves: what it had in flight is no longer counted; its past counts stay.
        c.set_members(["c:8080".to_string()]);
        let o = observe(&c);
        assert_eq!(o.demand.inflight, 1);
        assert_eq!(o.demand.arrivals, before.arrivals + 90 + 10);
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

    /// A member heard from again after a gap: its counters grew over the whole gap, and
    /// adding that at once would be a burst no tick saw; its report is a new baseline.
    #[tokio::test(start_paused = true)]
    async fn a_member_back_after_a_gap_adds_no_burst() {
        let (_routes, c) = setup();
        c.set_members(["b".to_string()]);
        c.apply("b", report(1, 100, 1000));
        c.apply("b", report(1, 110, 2000));
        let a = observe(&c).demand;
        assert_eq!(a.arrivals, 10);
        tokio::time::advance(Duration::from_secs(30)).await;
        c.apply("b", report(2, 5110, 90_000));
        let b = observe(&c).demand;
        assert_eq!((b.arrivals, b.busy_us, b.inflight), (10, 1000, 2));
        // Continuous again from there.
        c.apply("b", report(2, 5120, 91_000));
        assert_eq!(observe(&c).demand.arrivals, 20);
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
        let mut r = report(0, 1, 1);
        r.functions[0].idle_ms = 0;
        let before = clock::now_ms();
        c.apply("b", r);
        let after = clock::now_ms();
        let o = observe(&c);
        // b saw a request as it reported: that is the function's last arrival.
        let at = o.demand.last_arrival_ms;
        assert!(at >= before && at <= after, "{before} <= {at} <= {after}");
    }

    /// A member sends each leader only what changed since its last report to that leader;
    /// the leader keeps the rest as last reported, and asks for everything when it has no
    /// current baseline.
    #[tokio::test(start_paused = true)]
    async fn partial_reports_carry_only_changes_and_need_a_baseline() {
        let member = Routes::new();
        member.upsert(&key());
        member.upsert(&FunctionKey::new("g", "").unwrap());
        let f = member.get(key().as_ref()).unwrap();
        let g = member
            .get(FunctionKey::new("g", "").unwrap().as_ref())
            .unwrap();
        // Both served a request that ended (a request in flight changes the in-flight integral
        // all along, so its function is in every report).
        for h in [&f, &g] {
            h.demand.begin(clock::now_us());
            h.demand.end(clock::now_us() + 10);
        }
        let book = ReportBook::default();
        // The first report to a leader is full, whatever it asks.
        let r = Report::for_leader(&member, &book, "L", false);
        assert!(r.full);
        assert_eq!(r.functions.len(), 2);
        // Nothing changed: an empty partial report.
        let r = Report::for_leader(&member, &book, "L", false);
        assert!(!r.full && r.functions.is_empty(), "{r:?}");
        // One function changes: only it is sent; another leader still gets everything.
        g.demand.begin(clock::now_us());
        let r = Report::for_leader(&member, &book, "L", false);
        assert_eq!(r.functions.len(), 1);
        assert_eq!(r.functions[0].function, "g.openfaas-fn");
        assert_eq!(
            Report::for_leader(&member, &book, "M", false)
                .functions
                .len(),
            2
        );

        // The leader's side: a partial report without a baseline is ignored.
        let (_routes, c) = setup();
        c.set_members(["b".to_string()]);
        assert!(c.needs_full("b"));
        let partial = Report {
            full: false,
            ..report(5, 10, 10)
        };
        c.apply("b", partial.clone());
        assert!(c.needs_full("b"));
        assert_eq!(observe(&c).demand.inflight, 0);
        c.apply("b", report(2, 10, 10));
        assert!(!c.needs_full("b"));
        // An empty partial report keeps the member's last figures.
        c.apply(
            "b",
            Report {
                full: false,
                functions: Vec::new(),
            },
        );
        assert_eq!(observe(&c).demand.inflight, 2);
        c.apply("b", partial);
        assert_eq!(observe(&c).demand.inflight, 5);
        // Stale: the next pull asks for everything again.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(c.needs_full("b"));
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
