//! Metrics primitives: per-function counters kept in atomics on the request path (codes,
//! latency histograms), OpenFaaS's metric names, and the family builders collectors use.
//! What reads them at scrape time lives with its reader (`api::metrics`, the scaler).
//!
//! Why the `prometheus` crate: its `Collector` trait lets a scrape build metric families from
//! our own atomics (see `families`), so the hot path never touches a label map or a lock,
//! while the crate still provides the text encoder and the standard `process_*` collector.

pub mod codes;
pub(crate) mod families;
pub mod histogram;

use std::sync::atomic::AtomicU64;

pub use codes::CodeTable;
pub use histogram::LatencyHistogram;

/// Metric names, as the OpenFaaS gateway exports them (reference section 4).
pub(crate) mod names {
    pub(crate) const INVOCATION_TOTAL: &str = "gateway_function_invocation_total";
    pub(crate) const FUNCTIONS_SECONDS: &str = "gateway_functions_seconds";
    pub(crate) const INVOCATION_STARTED: &str = "gateway_function_invocation_started";
    pub(crate) const SERVICE_COUNT: &str = "gateway_service_count";
    pub(crate) const INVOCATION_INFLIGHT: &str = "gateway_function_invocation_inflight";
    pub(crate) const SERVICE_READY_COUNT: &str = "gateway_service_ready_count";
    pub(crate) const QUEUED: &str = "faasgate_function_queued_requests";
    pub(crate) const LATENCY_QUANTILES: &str = "faasgate_function_latency_seconds";
}

/// Label names.
pub(crate) mod labels {
    pub(crate) const FUNCTION_NAME: &str = "function_name";
    pub(crate) const CODE: &str = "code";
    pub(crate) const QUANTILE: &str = "quantile";
    /// The `code` of calls whose status did not get a slot of their own.
    pub(crate) const OTHER_CODE: &str = "other";
}

/// One function's invocation metrics.
#[derive(Default)]
pub struct FunctionMetrics {
    /// `gateway_function_invocation_started`.
    pub started: AtomicU64,
    /// `gateway_function_invocation_total` and `gateway_functions_seconds` per code.
    pub codes: CodeTable,
    /// Latency percentiles (all codes).
    pub latency: LatencyHistogram,
}
