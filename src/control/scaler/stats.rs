//! The scaler's metrics: decisions, demand and panic per function, exported at scrape time.
//!
//! Families: `faasgate_scale_decisions_total{direction,function_name,reason}` (counter, the
//! queue-depth scaler's and the alert handler's calls), `faasgate_function_demand
//! {function_name,window}` (gauge: the stable and panic window averages, in the function's
//! unit) and `faasgate_function_panic{function_name}` (gauge, 1 while panicking). Desired and
//! ready replicas are `gateway_service_count` and `gateway_service_ready_count`.
//! Written by control-plane tasks behind a `std` mutex held for a map update; never on the
//! request path.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};

use crate::control::scaler::decide::{Direction, Reason};
use crate::metrics::families::{counter, families, gauge, label};
use crate::metrics::labels as metric_labels;

pub(crate) mod names {
    pub(crate) const DECISIONS: &str = "faasgate_scale_decisions_total";
    pub(crate) const DEMAND: &str = "faasgate_function_demand";
    pub(crate) const PANIC: &str = "faasgate_function_panic";
}

const FAMILIES: [(&str, &str, &[&str], MetricType); 3] = [
    (
        names::DECISIONS,
        "Scale calls decided, by direction and reason.",
        &["direction", metric_labels::FUNCTION_NAME, "reason"],
        MetricType::COUNTER,
    ),
    (
        names::DEMAND,
        "Average demand (in flight + held, or requests per second) over the stable and panic windows.",
        &[metric_labels::FUNCTION_NAME, "window"],
        MetricType::GAUGE,
    ),
    (
        names::PANIC,
        "1 while the scaler is in panic mode for the function.",
        &[metric_labels::FUNCTION_NAME],
        MetricType::GAUGE,
    ),
];

/// Shared scaler statistics.
#[derive(Default)]
pub struct ScaleStats {
    functions: Mutex<BTreeMap<String, FunctionStats>>,
}

#[derive(Default)]
struct FunctionStats {
    stable: f64,
    panic: f64,
    panicking: bool,
    decisions: BTreeMap<(&'static str, &'static str), u64>,
}

/// The [`Collector`] over [`ScaleStats`].
pub(crate) struct StatsCollector {
    stats: Arc<ScaleStats>,
    descs: Vec<Desc>,
}

// === impl ScaleStats ===

impl ScaleStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, FunctionStats>> {
        self.functions.lock().expect("scale stats mutex poisoned")
    }

    /// Records the windows of one tick.
    pub(crate) fn observe(&self, function: &str, stable: f64, panic: f64, panicking: bool) {
        let mut m = self.lock();
        let f = match m.get_mut(function) {
            Some(f) => f,
            None => m.entry(function.to_string()).or_default(),
        };
        f.stable = stable;
        f.panic = panic;
        f.panicking = panicking;
    }

    /// Counts one scale call decided.
    pub(crate) fn decision(&self, function: &str, direction: Direction, reason: Reason) {
        let mut m = self.lock();
        *m.entry(function.to_string())
            .or_default()
            .decisions
            .entry((direction.as_str(), reason.as_str()))
            .or_default() += 1;
    }

    /// Decisions counted so far for `function` (tests, diagnostics).
    #[cfg(test)]
    pub(crate) fn decisions(&self, function: &str, direction: Direction, reason: Reason) -> u64 {
        self.lock()
            .get(function)
            .and_then(|f| f.decisions.get(&(direction.as_str(), reason.as_str())))
            .copied()
            .unwrap_or(0)
    }

    /// Drops a function that no longer exists.
    pub(crate) fn forget(&self, function: &str) {
        self.lock().remove(function);
    }

    pub(crate) fn collector(self: &Arc<Self>) -> StatsCollector {
        let descs = crate::metrics::families::descs(&FAMILIES);
        StatsCollector {
            stats: self.clone(),
            descs,
        }
    }
}

// === impl StatsCollector ===

impl Collector for StatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let m = self.stats.lock();
        let (mut decisions, mut demand, mut panic) = (Vec::new(), Vec::new(), Vec::new());
        for (function, f) in m.iter() {
            for ((direction, reason), n) in &f.decisions {
                decisions.push(counter(
                    vec![
                        label("direction", direction),
                        label(metric_labels::FUNCTION_NAME, function),
                        label("reason", reason),
                    ],
                    *n as f64,
                ));
            }
            for (window, v) in [("panic", f.panic), ("stable", f.stable)] {
                demand.push(gauge(
                    vec![
                        label(metric_labels::FUNCTION_NAME, function),
                        label("window", window),
                    ],
                    v,
                ));
            }
            panic.push(gauge(
                vec![label(metric_labels::FUNCTION_NAME, function)],
                if f.panicking { 1.0 } else { 0.0 },
            ));
        }
        families(&FAMILIES, [decisions, demand, panic])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder as _, Registry, TextEncoder};

    fn render(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn exported_with_the_gateway_families() {
        let stats = Arc::new(ScaleStats::default());
        stats.observe("f.openfaas-fn", 12.5, 40.0, true);
        stats.decision("f.openfaas-fn", Direction::Up, Reason::Panic);
        stats.decision("f.openfaas-fn", Direction::Up, Reason::Panic);
        let registry = Registry::new();
        registry.register(Box::new(stats.collector())).unwrap();
        let text = render(&registry);
        for want in [
            r#"faasgate_scale_decisions_total{direction="up",function_name="f.openfaas-fn",reason="panic"} 2"#,
            r#"faasgate_function_demand{function_name="f.openfaas-fn",window="stable"} 12.5"#,
            r#"faasgate_function_demand{function_name="f.openfaas-fn",window="panic"} 40"#,
            r#"faasgate_function_panic{function_name="f.openfaas-fn"} 1"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert_eq!(
            stats.decisions("f.openfaas-fn", Direction::Up, Reason::Panic),
            2
        );
        stats.forget("f.openfaas-fn");
        assert!(!render(&registry).contains("faasgate_function_panic{"));
    }
}
