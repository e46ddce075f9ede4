//! `/metrics` in the Prometheus text format, with OpenFaaS's metric names (reference section 4).
//!
//! Owns: the [`prometheus::Registry`] behind `/metrics`, and the collector that turns the data
//! plane's per-function atomics into metric families **at scrape time**.
//!
//! Invariants:
//! - The request path never touches this module: it bumps atomics in
//!   [`FunctionMetrics`](crate::metrics::FunctionMetrics) and [`Demand`](crate::dataplane::table::Demand);
//!   a scrape takes one [`Routes::snapshot`] and reads them (relaxed loads, so a scrape may see
//!   a call counted in `_count` a moment before its bucket; `+Inf` is `_count`, so buckets stay
//!   monotonic).
//! - Label pairs are in label-name order (`code`, `function_name`, `le`/`quantile`), as the Go
//!   client writes them, so dashboards and tests see the same text; `function_name` is
//!   `name.namespace`. Codes beyond the per-function slots are exported as `code="other"`.
//! - Families: `gateway_function_invocation_total` and `gateway_functions_seconds` (per code,
//!   once a function was invoked), `gateway_function_invocation_started`,
//!   `gateway_service_count` (desired), `gateway_service_ready_count`,
//!   `gateway_function_invocation_inflight`, `faasgate_function_queued_requests` (every
//!   function), `faasgate_function_latency_seconds{quantile}` (functions with data), plus the
//!   standard `process_*` collector on Linux.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};
use prometheus::{Registry, TextEncoder};
use thiserror::Error;

use crate::dataplane::table::{FunctionHandle, Routes};
use crate::metrics::codes::BUCKETS_SECONDS;
use crate::metrics::families::{counter, families, gauge, label};
use crate::metrics::names;

/// The `Content-Type` of [`Exposition::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) use crate::metrics::labels;

/// Quantiles exported in `faasgate_function_latency_seconds`, as label values.
const QUANTILES: [&str; 4] = ["0.5", "0.9", "0.99", "0.999"];

/// Family name, help, label names, type.
const FAMILIES: [(&str, &str, &[&str], MetricType); 8] = [
    (
        names::INVOCATION_TOTAL,
        "Function metrics: completed invocations by status code.",
        &[labels::CODE, labels::FUNCTION_NAME],
        MetricType::COUNTER,
    ),
    (
        names::FUNCTIONS_SECONDS,
        "Function time taken: invocation duration in seconds by status code.",
        &[labels::CODE, labels::FUNCTION_NAME],
        MetricType::HISTOGRAM,
    ),
    (
        names::INVOCATION_STARTED,
        "The total number of function HTTP requests started.",
        &[labels::FUNCTION_NAME],
        MetricType::COUNTER,
    ),
    (
        names::SERVICE_COUNT,
        "Current count of replicas for function (desired).",
        &[labels::FUNCTION_NAME],
        MetricType::GAUGE,
    ),
    (
        names::SERVICE_READY_COUNT,
        "Replicas of the function ready to serve.",
        &[labels::FUNCTION_NAME],
        MetricType::GAUGE,
    ),
    (
        names::INVOCATION_INFLIGHT,
        "Function invocations being served now.",
        &[labels::FUNCTION_NAME],
        MetricType::GAUGE,
    ),
    (
        names::QUEUED,
        "Function invocations held waiting for a ready replica now.",
        &[labels::FUNCTION_NAME],
        MetricType::GAUGE,
    ),
    (
        names::LATENCY_QUANTILES,
        "Invocation latency quantiles in seconds since the function was deployed (HDR, <3.2% error).",
        &[labels::FUNCTION_NAME, labels::QUANTILE],
        MetricType::GAUGE,
    ),
];

#[derive(Debug, Error)]
pub enum ExpositionError {
    #[error("registering a metrics collector: {0}")]
    Register(#[from] prometheus::Error),
}

/// The registry served on `/metrics`.
pub struct Exposition {
    registry: Registry,
}

/// Builds the per-function families from the route table at scrape time.
struct FunctionCollector {
    routes: Arc<Routes>,
    descs: Vec<Desc>,
}

/// The families of one scrape, filled function by function.
struct Families {
    invocation_total: Vec<Metric>,
    functions_seconds: Vec<Metric>,
    started: Vec<Metric>,
    service_count: Vec<Metric>,
    ready_count: Vec<Metric>,
    inflight: Vec<Metric>,
    queued: Vec<Metric>,
    latency: Vec<Metric>,
}

// === impl Exposition ===

impl Exposition {
    pub fn new(routes: Arc<Routes>) -> Self {
        let registry = Registry::new();
        registry
            .register(Box::new(FunctionCollector::new(routes)))
            .expect("the first collector of a fresh registry has unique, valid descriptors");
        registry
            .register(Box::new(super::wire::WireCollector::default()))
            .expect("the wire families are distinct from the function families");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process_* names do not collide with the function families");
        Self { registry }
    }

    /// Adds a collector (more families later: scaler, pools). Its names must be new.
    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), ExpositionError> {
        Ok(self.registry.register(collector)?)
    }

    /// Every family in the text format, sorted by name.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = String::with_capacity(4096);
        if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
            // Only an empty or unnamed family fails, and `gather` prunes those.
            tracing::warn!(error = %e, "encoding /metrics");
        }
        out
    }

    /// The same, written into `w` (avoids the intermediate `String` for large outputs).
    #[cfg(test)]
    pub(crate) fn render_to(&self, w: &mut impl std::io::Write) -> Result<(), prometheus::Error> {
        use prometheus::Encoder as _;
        TextEncoder::new().encode(&self.registry.gather(), w)
    }
}

// === impl FunctionCollector ===

impl FunctionCollector {
    fn new(routes: Arc<Routes>) -> Self {
        let descs = crate::metrics::families::descs(&FAMILIES);
        Self { routes, descs }
    }
}

impl Collector for FunctionCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut handles = self.routes.snapshot();
        handles.sort_unstable_by(|a, b| a.label().cmp(b.label()));

        let mut f = Families::with_capacity(handles.len());
        for h in &handles {
            f.add(h);
        }
        f.into_families()
    }
}

// === impl Families ===

impl Families {
    fn with_capacity(n: usize) -> Self {
        Self {
            invocation_total: Vec::with_capacity(n),
            functions_seconds: Vec::with_capacity(n),
            started: Vec::with_capacity(n),
            service_count: Vec::with_capacity(n),
            ready_count: Vec::with_capacity(n),
            inflight: Vec::with_capacity(n),
            queued: Vec::with_capacity(n),
            latency: Vec::new(),
        }
    }

    fn add(&mut self, h: &FunctionHandle) {
        let function = h.label();
        for s in h.metrics.codes.samples() {
            let code = match s.code {
                Some(c) => c.to_string(),
                None => labels::OTHER_CODE.to_string(),
            };
            let pairs = || {
                vec![
                    label(labels::CODE, &code),
                    label(labels::FUNCTION_NAME, function),
                ]
            };
            self.invocation_total.push(counter(pairs(), s.count as f64));

            let buckets = BUCKETS_SECONDS
                .iter()
                .zip(s.cumulative)
                .map(|(&le, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(n);
                    b
                })
                .collect();
            let mut hist = Histogram::default();
            hist.set_bucket(buckets);
            hist.set_sample_count(s.count);
            hist.set_sample_sum(s.sum_seconds);
            let mut m = Metric::from_label(pairs());
            m.set_histogram(hist);
            self.functions_seconds.push(m);
        }

        let only_name = || vec![label(labels::FUNCTION_NAME, function)];
        let state = h.state();
        self.started.push(counter(
            only_name(),
            h.metrics.started.load(Ordering::Relaxed) as f64,
        ));
        self.service_count
            .push(gauge(only_name(), state.desired as f64));
        self.ready_count
            .push(gauge(only_name(), state.replicas.len() as f64));
        self.inflight
            .push(gauge(only_name(), h.demand.inflight() as f64));
        self.queued.push(gauge(
            only_name(),
            h.demand.queued.load(Ordering::Relaxed) as f64,
        ));

        let p = h.metrics.latency.percentiles();
        if p.count > 0 {
            for (q, v) in QUANTILES.iter().zip([p.p50, p.p90, p.p99, p.p999]) {
                self.latency.push(gauge(
                    vec![
                        label(labels::FUNCTION_NAME, function),
                        label(labels::QUANTILE, q),
                    ],
                    v,
                ));
            }
        }
    }

    fn into_families(self) -> Vec<MetricFamily> {
        let metrics = [
            self.invocation_total,
            self.functions_seconds,
            self.started,
            self.service_count,
            self.ready_count,
            self.inflight,
            self.queued,
            self.latency,
        ];
        families(&FAMILIES, metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::table::FunctionState;
    use crate::dataplane::Replica;
    use crate::model::names::FunctionKey;
    use std::time::Duration;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn renders_openfaas_families() {
        let routes = Arc::new(Routes::new());
        let echo = routes.upsert(&FunctionKey::new("echo", "").unwrap());
        let idle = routes.upsert(&FunctionKey::new("idle", "team").unwrap());
        echo.metrics.started.fetch_add(3, Ordering::Relaxed);
        echo.metrics.codes.record(200, Duration::from_millis(3));
        echo.metrics.codes.record(200, Duration::from_millis(30));
        echo.metrics.codes.record(502, Duration::from_secs(20));
        for ms in [3, 30, 20_000] {
            echo.metrics.latency.record(Duration::from_millis(ms));
        }
        echo.demand.begin(crate::sys::clock::now_us());
        echo.demand.queued.fetch_add(4, Ordering::Relaxed);
        echo.publish(FunctionState {
            replicas: vec![Replica::new("r1", "127.0.0.1:1".parse().unwrap())].into(),
            desired: 2,
            cold_start_replicas: 1,
            ..Default::default()
        });
        idle.publish_desired(0, 1);

        let exposition = Exposition::new(routes.clone());
        let text = exposition.render();
        let got = lines(&text);
        let f = r#"function_name="echo.openfaas-fn""#;
        for want in [
            "# TYPE gateway_function_invocation_total counter".to_string(),
            format!(r#"gateway_function_invocation_total{{code="200",{f}}} 2"#),
            format!(r#"gateway_function_invocation_total{{code="502",{f}}} 1"#),
            "# TYPE gateway_functions_seconds histogram".to_string(),
            format!(r#"gateway_functions_seconds_bucket{{code="200",{f},le="0.005"}} 1"#),
            format!(r#"gateway_functions_seconds_bucket{{code="200",{f},le="0.025"}} 1"#),
            format!(r#"gateway_functions_seconds_bucket{{code="200",{f},le="0.05"}} 2"#),
            format!(r#"gateway_functions_seconds_bucket{{code="200",{f},le="10"}} 2"#),
            format!(r#"gateway_functions_seconds_bucket{{code="200",{f},le="+Inf"}} 2"#),
            format!(r#"gateway_functions_seconds_sum{{code="200",{f}}} 0.033"#),
            format!(r#"gateway_functions_seconds_count{{code="200",{f}}} 2"#),
            format!(r#"gateway_functions_seconds_bucket{{code="502",{f},le="10"}} 0"#),
            format!(r#"gateway_functions_seconds_bucket{{code="502",{f},le="+Inf"}} 1"#),
            format!(r#"gateway_function_invocation_started{{{f}}} 3"#),
            r#"gateway_function_invocation_started{function_name="idle.team"} 0"#.to_string(),
            "# TYPE gateway_service_count gauge".to_string(),
            format!(r#"gateway_service_count{{{f}}} 2"#),
            r#"gateway_service_count{function_name="idle.team"} 0"#.to_string(),
            format!(r#"gateway_service_ready_count{{{f}}} 1"#),
            format!(r#"gateway_function_invocation_inflight{{{f}}} 1"#),
            format!(r#"faasgate_function_queued_requests{{{f}}} 4"#),
        ] {
            assert!(got.contains(&want.as_str()), "missing {want:?} in\n{text}");
        }

        // Quantiles only for functions with data, labels in name order.
        let q: Vec<_> = got
            .iter()
            .filter(|l| l.starts_with("faasgate_function_latency_seconds{"))
            .collect();
        assert_eq!(q.len(), 4, "{text}");
        let p50 = q[0]
            .strip_prefix(&format!(
                r#"faasgate_function_latency_seconds{{{f},quantile="0.5"}} "#
            ))
            .unwrap_or_else(|| panic!("{}", q[0]));
        let p50: f64 = p50.parse().unwrap();
        assert!((p50 - 0.03).abs() < 0.03 * 0.04, "{p50}");
        assert!(q[3].contains(r#"quantile="0.999"}"#), "{}", q[3]);
        assert!(!text.contains(r#"function_name="idle.team",quantile"#));
        assert!(!text.contains(r#"code="200",function_name="idle.team""#));

        #[cfg(target_os = "linux")]
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn overflow_codes_are_other() {
        let routes = Arc::new(Routes::new());
        let h = routes.upsert(&FunctionKey::new("busy", "").unwrap());
        for code in 200..(200 + crate::metrics::codes::SLOTS as u16 + 2) {
            h.metrics.codes.record(code, Duration::from_millis(1));
        }
        let text = Exposition::new(routes).render();
        assert!(text.contains(
            r#"gateway_function_invocation_total{code="other",function_name="busy.openfaas-fn"} 2"#
        ), "{text}");
        assert!(text.contains(
            r#"gateway_functions_seconds_bucket{code="other",function_name="busy.openfaas-fn",le="0.005"} 2"#
        ), "{text}");
    }

    #[test]
    fn empty_table_and_extra_collectors() {
        let routes = Arc::new(Routes::new());
        let e = Exposition::new(routes);
        let text = e.render();
        assert!(!text.contains("gateway_"), "{text}");

        let c = prometheus::IntCounter::new("faasgate_test_total", "A test counter.").unwrap();
        c.inc();
        e.register(Box::new(c.clone())).unwrap();
        assert!(e.render().contains("faasgate_test_total 1"));
        assert!(
            e.register(Box::new(c)).is_err(),
            "duplicate names are refused"
        );

        let mut buf = Vec::new();
        e.render_to(&mut buf).unwrap();
        assert!(String::from_utf8(buf)
            .unwrap()
            .contains("\nfaasgate_test_total 1\n"));
    }
}
