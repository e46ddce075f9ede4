//! Per-function time series for the UI: one [`Sample`] a second, the last [`KEEP`] kept.
//!
//! A control-plane task ([`spawn_sampler`]) reads each function's atomics from the route
//! table every [`INTERVAL`]: desired and ready replicas, completed invocations (turned into a
//! rate), in-flight and queued requests, and the latency percentiles of the calls that ended
//! during the interval (the difference of two HDR snapshots of the function's
//! [`LatencyHistogram`](crate::metrics::LatencyHistogram)). Nothing here runs on the invocation path;
//! the request path only bumps the atomics it always bumps.
//!
//! Costs: a function that saw no call since the last tick costs a few atomic loads, no
//! snapshot and no allocation; one with calls costs one snapshot (a ~32 KiB HDR histogram,
//! kept as the next baseline). Each ring is bounded (`KEEP` samples, ~100 bytes each), and
//! rings of removed functions are dropped on the next tick. Readers ([`Series::function`],
//! [`Series::latest`]) take a mutex the sampler holds only while appending.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hashbrown::HashMap;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::dataplane::FunctionHandle;
use crate::dataplane::Routes;
use crate::model::names::FunctionKey;

/// Time between two samples.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept per function: ten minutes.
pub(crate) const KEEP: usize = 600;
/// Samples averaged for the rate of [`Series::latest`]: ten seconds.
pub(crate) const RATE_WINDOW: usize = 10;

/// One function at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Unix time in milliseconds.
    pub t: u64,
    /// Desired replicas.
    pub desired: u64,
    /// Ready replicas (in rotation).
    pub ready: u64,
    /// Completed invocations since the function was deployed.
    pub invocations: u64,
    /// Completed invocations per second over the interval that ends here.
    pub rate: f64,
    /// Median latency (seconds) of the calls that ended in the interval; null when none did.
    pub p50: Option<f64>,
    /// 99th percentile latency (seconds) of the same calls.
    pub p99: Option<f64>,
    /// Requests being served at this instant.
    pub inflight: u64,
    /// Requests held waiting for a ready replica at this instant.
    pub queued: u64,
}

/// The rings of every function; shared by the sampler (writer) and the API (readers).
#[derive(Default)]
pub struct Series {
    rings: Mutex<HashMap<FunctionKey, VecDeque<Sample>>>,
}

/// The sampler's own state: the baselines it subtracts. Owned by its task, never shared.
#[derive(Default)]
pub(crate) struct Sampler {
    last: HashMap<FunctionKey, Baseline>,
}

struct Baseline {
    t: u64,
    invocations: u64,
    /// Cumulative latency snapshot at the last tick that saw new calls.
    latency: Option<Histogram<u64>>,
}

// === impl Series ===

impl Series {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every sample kept for `key`, oldest first (empty when unknown).
    pub fn function(&self, key: &FunctionKey) -> Vec<Sample> {
        let rings = self.rings.lock().expect("series mutex poisoned");
        rings
            .get(key)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The newest sample of each function of `namespace`, its rate averaged over the last
    /// [`RATE_WINDOW`] samples, and the newest percentiles seen within that window.
    pub fn latest(&self, namespace: &str) -> Vec<(FunctionKey, Sample)> {
        let rings = self.rings.lock().expect("series mutex poisoned");
        let mut out: Vec<(FunctionKey, Sample)> = rings
            .iter()
            .filter(|(k, _)| k.namespace() == namespace)
            .filter_map(|(k, r)| summarise(r).map(|s| (k.clone(), s)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn append(&self, routes: &[Arc<FunctionHandle>], samples: Vec<(FunctionKey, Sample)>) {
        let live: std::collections::HashSet<&FunctionKey> =
            routes.iter().map(|h| h.key()).collect();
        let mut rings = self.rings.lock().expect("series mutex poisoned");
        rings.retain(|k, _| live.contains(k));
        for (key, sample) in samples {
            let ring = rings.entry(key).or_default();
            if ring.len() == KEEP {
                ring.pop_front();
            }
            ring.push_back(sample);
        }
    }
}

fn summarise(ring: &VecDeque<Sample>) -> Option<Sample> {
    let last = *ring.back()?;
    let first = ring[ring.len().saturating_sub(RATE_WINDOW + 1)];
    let secs = last.t.saturating_sub(first.t) as f64 / 1000.0;
    let rate = if secs > 0.0 {
        last.invocations.saturating_sub(first.invocations) as f64 / secs
    } else {
        last.rate
    };
    let recent = ring
        .iter()
        .rev()
        .take(RATE_WINDOW)
        .find(|s| s.p50.is_some());
    Some(Sample {
        rate,
        p50: recent.and_then(|s| s.p50),
        p99: recent.and_then(|s| s.p99),
        ..last
    })
}

// === impl Sampler ===

impl Sampler {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Takes one sample of every function in `routes` at `now` (Unix ms) into `series`.
    pub(crate) fn tick(&mut self, routes: &[Arc<FunctionHandle>], now: u64, series: &Series) {
        let live: std::collections::HashSet<&FunctionKey> =
            routes.iter().map(|h| h.key()).collect();
        self.last.retain(|k, _| live.contains(k));
        let mut samples = Vec::with_capacity(routes.len());
        for handle in routes.iter() {
            let key = handle.key();
            let state = handle.state();
            let invocations = handle.metrics.codes.total();
            // First sight: counters start at zero when a function is created (and the
            // sampler starts with the gateway), so the first window holds every call so far.
            let base = self.last.entry(key.clone()).or_insert_with(|| Baseline {
                t: now.saturating_sub(INTERVAL.as_millis() as u64),
                invocations: 0,
                latency: None,
            });
            let secs = now.saturating_sub(base.t) as f64 / 1000.0;
            let rate = if secs > 0.0 {
                invocations.saturating_sub(base.invocations) as f64 / secs
            } else {
                0.0
            };
            let (mut p50, mut p99) = (None, None);
            if invocations != base.invocations {
                let current = handle.metrics.latency.snapshot();
                let mut window = current.clone();
                if let Some(prev) = &base.latency {
                    // Counts only grow, so the subtraction cannot underflow.
                    let _ = window.subtract(prev);
                }
                if !window.is_empty() {
                    p50 = Some(window.value_at_quantile(0.5) as f64 / 1e6);
                    p99 = Some(window.value_at_quantile(0.99) as f64 / 1e6);
                }
                base.latency = Some(current);
            }
            base.t = now;
            base.invocations = invocations;
            samples.push((
                key.clone(),
                Sample {
                    t: now,
                    desired: state.desired,
                    ready: state.replicas.len() as u64,
                    invocations,
                    rate,
                    p50,
                    p99,
                    inflight: handle.demand.inflight(),
                    queued: handle.demand.queued.load(Ordering::Relaxed),
                },
            ));
        }
        series.append(routes, samples);
    }
}

/// Samples `routes` into `series` every [`INTERVAL`] until the task is aborted.
pub(crate) fn spawn_sampler(routes: Arc<Routes>, series: Arc<Series>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sampler = Sampler::new();
        let mut every = tokio::time::interval(INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let snapshot = routes.snapshot();
            sampler.tick(&snapshot, crate::sys::clock::unix_ms(), &series);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::FunctionState;

    #[test]
    fn samples_rate_windowed_percentiles_and_replicas() {
        let routes = Routes::new();
        let key = FunctionKey::new("f", "").unwrap();
        let h = routes.upsert(&key);
        h.publish_desired(2, 1);
        let series = Series::new();
        let mut sampler = Sampler::new();

        // Calls before the first tick count in the first window.
        h.metrics.codes.record(200, Duration::from_millis(50));
        h.metrics.latency.record(Duration::from_millis(50));
        sampler.tick(&routes.snapshot(), 10_000, &series);
        // 10 slow calls in the first second, 20 fast ones in the next.
        for _ in 0..10 {
            h.metrics.codes.record(200, Duration::from_millis(100));
            h.metrics.latency.record(Duration::from_millis(100));
        }
        sampler.tick(&routes.snapshot(), 11_000, &series);
        for _ in 0..20 {
            h.metrics.codes.record(200, Duration::from_millis(2));
            h.metrics.latency.record(Duration::from_millis(2));
        }
        sampler.tick(&routes.snapshot(), 12_000, &series);
        sampler.tick(&routes.snapshot(), 13_000, &series);

        let s = series.function(&key);
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].rate, s[0].invocations), (1.0, 1));
        assert!((s[0].p50.unwrap() - 0.05).abs() < 0.002, "{:?}", s[0]);
        assert_eq!((s[1].rate, s[1].invocations), (10.0, 11));
        let p = s[1].p50.unwrap();
        assert!((p - 0.1).abs() < 0.004, "{p}");
        // The window holds only the fast calls: the slow ones were subtracted.
        assert_eq!(s[2].rate, 20.0);
        let p = s[2].p99.unwrap();
        assert!((p - 0.002).abs() < 0.0001, "{p}");
        assert_eq!((s[3].rate, s[3].p50), (0.0, None), "idle second");
        assert_eq!((s[3].desired, s[3].ready), (2, 0));

        let latest = series.latest("openfaas-fn");
        assert_eq!(latest.len(), 1);
        assert_eq!(
            latest[0].1.rate, 10.0,
            "30 calls over the 3 s since the first sample"
        );
        assert!(
            latest[0].1.p50.is_some(),
            "newest percentiles within the window"
        );
        assert!(series.latest("other").is_empty());

        h.publish(FunctionState::default());
        routes.remove(&key);
        sampler.tick(&routes.snapshot(), 14_000, &series);
        assert!(
            series.function(&key).is_empty(),
            "removed functions are dropped"
        );
    }

    #[test]
    fn rings_are_bounded() {
        let routes = Routes::new();
        let key = FunctionKey::new("f", "").unwrap();
        routes.upsert(&key);
        let series = Series::new();
        let mut sampler = Sampler::new();
        for i in 0..(KEEP as u64 + 5) {
            sampler.tick(&routes.snapshot(), i * 1000, &series);
        }
        let s = series.function(&key);
        assert_eq!(s.len(), KEEP);
        assert_eq!(s[0].t, 5000);
    }
}
