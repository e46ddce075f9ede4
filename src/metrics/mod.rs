//! Metrics primitives: per-function counters kept in atomics on the request path (codes,
//! latency histograms), OpenFaaS's metric names, and the family builders collectors use.
//! What reads them at scrape time lives with its reader (`api::metrics`, the scaler).
//!
//! Why the `prometheus` crate: its `Collector` trait lets a scrape build metric families from
//! our own atomics (see `families`), so the hot path never touches a label map or a lock,
//! while the crate still provides the text encoder and the standard `process_*` collector.

pub mod codes;
pub mod families;
pub mod histogram;

use std::sync::atomic::AtomicU64;

pub use codes::CodeTable;
pub use histogram::{LatencyHistogram, Percentiles};

/// Metric names, as the OpenFaaS gateway exports them (reference section 4).
pub mod names {
    pub const INVOCATION_TOTAL: &str = "gateway_function_invocation_total";
    pub const FUNCTIONS_SECONDS: &str = "gateway_functions_seconds";
    pub const INVOCATION_STARTED: &str = "gateway_function_invocation_started";
    pub const SERVICE_COUNT: &str = "gateway_service_count";
    pub const INVOCATION_INFLIGHT: &str = "gateway_function_invocation_inflight";
    pub const SERVICE_READY_COUNT: &str = "gateway_service_ready_count";
    pub const QUEUED: &str = "faasgate_function_queued_requests";
    pub const LATENCY_QUANTILES: &str = "faasgate_function_latency_seconds";
}

/// Label names.
pub mod labels {
    pub const FUNCTION_NAME: &str = "function_name";
    pub const CODE: &str = "code";
    pub const QUANTILE: &str = "quantile";
    /// The `code` of calls whose status did not get a slot of their own.
    pub const OTHER_CODE: &str = "other";
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
