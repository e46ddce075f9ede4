//! The async queue's metrics, read at scrape time: `faasgate_async_queued{function_name}`
//! (calls accepted and not yet done, those being delivered included),
//! `faasgate_async_oldest_seconds{function_name}` (age of the oldest),
//! `faasgate_async_delivered_total{function_name,code}` (deliveries that ended the call, by
//! the function's status), `faasgate_async_retries_total{function_name}` and
//! `faasgate_async_dead_letters_total{function_name}` (calls buried), and
//! `faasgate_async_dead_letters{function_name}` (dead letters in the list now: burials less
//! replays and drops; with NATS, counted once a second).
//!
//! Counters live in one map behind a mutex touched once per delivery (never on the
//! synchronous invocation path).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};

use crate::metrics::families::{counter, descs, families, gauge, label};
use crate::metrics::labels as metric_labels;
use crate::queue::store::CallStore;

/// Delivery counters per function.
#[derive(Default)]
pub struct AsyncStats {
    functions: Mutex<BTreeMap<String, Counts>>,
}

#[derive(Default)]
struct Counts {
    delivered: BTreeMap<u16, u64>,
    retries: u64,
    buried: u64,
}

const FAMILIES: [(&str, &str, &[&str], MetricType); 6] = [
    (
        "faasgate_async_queued",
        "Async calls accepted and not yet done (those being delivered included).",
        &[metric_labels::FUNCTION_NAME],
        MetricType::GAUGE,
    ),
    (
        "faasgate_async_oldest_seconds",
        "Age of the oldest async call queued.",
        &[metric_labels::FUNCTION_NAME],
        MetricType::GAUGE,
    ),
    (
        "faasgate_async_delivered_total",
        "Async calls delivered, by the function's status.",
        &[metric_labels::FUNCTION_NAME, "code"],
        MetricType::COUNTER,
    ),
    (
        "faasgate_async_retries_total",
        "Async deliveries that failed and were retried.",
        &[metric_labels::FUNCTION_NAME],
        MetricType::COUNTER,
    ),
    (
        "faasgate_async_dead_letters_total",
        "Async calls moved to the dead letters.",
        &[metric_labels::FUNCTION_NAME],
        MetricType::COUNTER,
    ),
    (
        "faasgate_async_dead_letters",
        "Async calls in the dead letters now.",
        &[metric_labels::FUNCTION_NAME],
        MetricType::GAUGE,
    ),
];

impl AsyncStats {
    pub(crate) fn delivered(&self, function: &str, code: u16) {
        self.with(function, |c| *c.delivered.entry(code).or_default() += 1);
    }

    pub(crate) fn retried(&self, function: &str) {
        self.with(function, |c| c.retries += 1);
    }

    pub(crate) fn buried(&self, function: &str) {
        self.with(function, |c| c.buried += 1);
    }

    fn with(&self, function: &str, f: impl FnOnce(&mut Counts)) {
        let mut m = self.functions.lock().expect("async stats mutex poisoned");
        match m.get_mut(function) {
            Some(c) => f(c),
            None => f(m.entry(function.to_string()).or_default()),
        }
    }

    /// Exports these counters and `store`'s backlog.
    pub fn collector(self: &Arc<Self>, store: Arc<dyn CallStore>) -> AsyncCollector {
        AsyncCollector {
            stats: self.clone(),
            store,
            descs: descs(&FAMILIES),
        }
    }
}

/// See the module doc.
pub struct AsyncCollector {
    stats: Arc<AsyncStats>,
    store: Arc<dyn CallStore>,
    descs: Vec<Desc>,
}

impl Collector for AsyncCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = crate::sys::clock::unix_ms();
        let (mut queued, mut oldest) = (Vec::new(), Vec::new());
        for b in self.store.backlog() {
            let f = || vec![label(metric_labels::FUNCTION_NAME, &b.function)];
            queued.push(gauge(f(), b.queued as f64));
            oldest.push(gauge(
                f(),
                now.saturating_sub(b.oldest_unix_ms) as f64 / 1000.0,
            ));
        }
        let (mut delivered, mut retries, mut buried) = (Vec::new(), Vec::new(), Vec::new());
        for (function, c) in self
            .stats
            .functions
            .lock()
            .expect("async stats mutex poisoned")
            .iter()
        {
            let f = || label(metric_labels::FUNCTION_NAME, function);
            for (code, n) in &c.delivered {
                delivered.push(counter(
                    vec![f(), label("code", &code.to_string())],
                    *n as f64,
                ));
            }
            retries.push(counter(vec![f()], c.retries as f64));
            buried.push(counter(vec![f()], c.buried as f64));
        }
        let dead = self
            .store
            .dead_counts()
            .into_iter()
            .map(|(function, n)| {
                gauge(
                    vec![label(metric_labels::FUNCTION_NAME, &function)],
                    n as f64,
                )
            })
            .collect();
        families(
            &FAMILIES,
            [queued, oldest, delivered, retries, buried, dead],
        )
    }
}
