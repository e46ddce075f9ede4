//! Where the scaler's demand comes from: the [`DemandSource`] trait and its local form.
//!
//! A source reports, per function, cumulative demand counters ([`DemandSample`]) with the
//! function's settings and replica counts. The scaler turns successive reports into window
//! averages, so a source never averages anything itself. [`LocalDemand`] reads this
//! gateway's route table (one snapshot load, relaxed atomic reads: nothing on the request
//! path waits for it). A cluster's source (`control::cluster::demand`) sums the same counters
//! over every gateway, which is sound because integrals and arrival counts add up.

use std::sync::Arc;

use crate::dataplane::table::{DemandSample, BUSY_MASK};
use crate::dataplane::Routes;
use crate::model::names::FunctionKey;
use crate::model::scale::ScaleSettings;

/// One function's demand and replica counts at one instant.
#[derive(Debug, Clone)]
pub struct Observation {
    pub key: FunctionKey,
    pub settings: ScaleSettings,
    /// Desired replicas (starting ones included).
    pub desired: u64,
    /// Replicas in rotation.
    pub ready: u64,
    pub demand: DemandSample,
    /// Every gateway's view of the function is in `demand`. `false` when a member's reports
    /// are missing: its share is unknown, so the scaler never scales down on it.
    pub complete: bool,
}

/// Something that can report every function's demand now.
#[async_trait::async_trait]
pub trait DemandSource: Send + Sync + 'static {
    /// Appends one observation per function to `out`.
    fn observe(&self, out: &mut Vec<Observation>);

    /// Brings what the source sums up to date just before an observation, waiting at most
    /// `within` (a cluster's leader pulls its members' reports, so that its own counters
    /// and theirs are of one instant). A source with nothing to fetch returns at once.
    async fn gather(&self, _within: std::time::Duration) {}
}

/// Demand seen by this gateway alone: its route table's counters, plus the async calls
/// waiting in its queue, counted as held requests (a backlog asks for the replicas that
/// drain it within the drain horizon, and a function with calls waiting is never idle).
pub(crate) struct LocalDemand {
    routes: Arc<Routes>,
    backlog: std::sync::OnceLock<Arc<dyn crate::queue::CallStore>>,
    /// The waiting calls' own in-flight integral per function (they are in no replica's
    /// count): at each observation, what waited since the previous one, times the time.
    waited: std::sync::Mutex<Waited>,
}

#[derive(Default)]
struct Waited {
    at_us: u64,
    /// Per function: calls waiting at the last observation, and their integral (µs).
    functions: std::collections::HashMap<String, (u64, u64)>,
}

// === impl LocalDemand ===

impl LocalDemand {
    pub(crate) fn new(routes: Arc<Routes>) -> Self {
        Self {
            routes,
            backlog: std::sync::OnceLock::new(),
            waited: Default::default(),
        }
    }

    /// Counts `store`'s waiting calls as demand too.
    pub(crate) fn with_backlog(self, store: Arc<dyn crate::queue::CallStore>) -> Self {
        self.count_backlog(store);
        self
    }

    /// Counts `store`'s waiting calls as demand from now on (once: a later store is ignored).
    pub(crate) fn count_backlog(&self, store: Arc<dyn crate::queue::CallStore>) {
        let _ = self.backlog.set(store);
    }
}

impl DemandSource for LocalDemand {
    fn observe(&self, out: &mut Vec<Observation>) {
        let mut waited = self.waited.lock().expect("backlog integral mutex poisoned");
        if let Some(store) = self.backlog.get() {
            let now_us = crate::sys::clock::now_us();
            let dt = now_us.saturating_sub(waited.at_us);
            waited.at_us = now_us;
            for (count, integral) in waited.functions.values_mut() {
                *integral = integral.wrapping_add(*count * dt);
                *count = 0;
            }
            for b in store.backlog() {
                waited.functions.entry(b.function).or_default().0 = b.queued - b.leased;
            }
        }
        let now_ms = crate::sys::clock::now_ms();
        for handle in self.routes.snapshot().iter() {
            let state = handle.state();
            let mut demand = handle.demand.sample();
            if let Some(&(count, integral)) = waited.functions.get(handle.label()) {
                demand.queued += count;
                demand.inflight += count;
                demand.busy_us = demand.busy_us.wrapping_add(integral) & BUSY_MASK;
                if count > 0 {
                    demand.last_arrival_ms = now_ms;
                }
            }
            out.push(Observation {
                key: handle.key().clone(),
                settings: state.scale,
                desired: state.desired,
                ready: state.replicas.len() as u64,
                demand,
                complete: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::FunctionState;

    #[test]
    fn reports_every_function_of_the_table() {
        let routes = Arc::new(Routes::new());
        let h = routes.upsert(&FunctionKey::new("a", "").unwrap());
        routes.upsert(&FunctionKey::new("b", "x").unwrap());
        h.publish(FunctionState {
            desired: 3,
            ..Default::default()
        });
        h.demand.begin(crate::sys::clock::now_us());
        let mut out = Vec::new();
        LocalDemand::new(routes).observe(&mut out);
        out.sort_by(|a, b| a.key.name().cmp(b.key.name()));
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].desired, out[0].ready), (3, 0));
        assert_eq!(out[0].demand.inflight, 1);
        assert_eq!(out[0].demand.arrivals, 1);
        assert_eq!(out[1].demand.inflight, 0);
    }
}
