//! Process-wide counters of the HTTP/1 wire at scrape time: client connections, requests
//! refused by the request rules, upstream connections closed instead of reused, response
//! bodies cut by the body timeout.
//!
//! Owns: the [`WireCollector`] registered with every [`Exposition`](super::exposition::Exposition).
//! Invariants: it only reads relaxed atomics the data plane bumps (`api::server`,
//! `http1::request_rules`, `http1::pool`, `http1::body`); the families are
//! process-wide (no `function_name` label): a gateway has one wire.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};

use crate::http1::pool::{self, Discard};
use crate::http1::request_rules::{self, RequestError};
use crate::metrics::families::{counter, families, gauge, label};

/// Metric names.
pub(crate) mod names {
    pub(crate) const CLIENT_CONNECTIONS: &str = "faasgate_client_connections";
    pub(crate) const REQUESTS_REJECTED: &str = "faasgate_requests_rejected_total";
    pub(crate) const UPSTREAM_DISCARDED: &str = "faasgate_upstream_connections_discarded_total";
    pub(crate) const UPSTREAM_BODY_TIMEOUTS: &str = "faasgate_upstream_body_timeouts_total";
}

const FAMILIES: [(&str, &str, &[&str], MetricType); 4] = [
    (
        names::CLIENT_CONNECTIONS,
        "Client connections open now.",
        &[],
        MetricType::GAUGE,
    ),
    (
        names::REQUESTS_REJECTED,
        "Requests answered 400 by a framing or Host rule (RFC 9112), by rule.",
        &["reason"],
        MetricType::COUNTER,
    ),
    (
        names::UPSTREAM_DISCARDED,
        "Upstream keep-alive connections closed instead of reused, by reason.",
        &["reason"],
        MetricType::COUNTER,
    ),
    (
        names::UPSTREAM_BODY_TIMEOUTS,
        "Responses cut because their body stalled past the upstream read timeout.",
        &[],
        MetricType::COUNTER,
    ),
];

pub(crate) struct WireCollector {
    descs: Vec<Desc>,
}

impl Default for WireCollector {
    fn default() -> Self {
        let descs = crate::metrics::families::descs(&FAMILIES);
        Self { descs }
    }
}

impl Collector for WireCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let metrics = [
            vec![gauge(
                Vec::new(),
                crate::api::server::open_connections() as f64,
            )],
            RequestError::ALL
                .iter()
                .map(|&e| {
                    counter(
                        vec![label("reason", e.as_str())],
                        request_rules::rejected(e) as f64,
                    )
                })
                .collect(),
            Discard::ALL
                .iter()
                .map(|&d| counter(vec![label("reason", d.as_str())], pool::discarded(d) as f64))
                .collect(),
            vec![counter(
                Vec::new(),
                crate::http1::body::body_timeouts() as f64,
            )],
        ];
        families(&FAMILIES, metrics)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::api::metrics::exposition::Exposition;
    use crate::dataplane::table::Routes;

    #[test]
    fn every_gateway_exports_the_wire_families() {
        let before = crate::http1::request_rules::rejected(
            crate::http1::request_rules::RequestError::DuplicateHost,
        );
        crate::http1::request_rules::count_rejected(
            crate::http1::request_rules::RequestError::DuplicateHost,
        );
        let text = Exposition::new(Arc::new(Routes::new())).render();
        for line in [
            "# TYPE faasgate_client_connections gauge",
            "# TYPE faasgate_requests_rejected_total counter",
            "# TYPE faasgate_upstream_connections_discarded_total counter",
            "# TYPE faasgate_upstream_body_timeouts_total counter",
            "faasgate_upstream_connections_discarded_total{reason=\"unread_bytes\"}",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        // Counters are process-wide: at least this test's count is there.
        let value: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("faasgate_requests_rejected_total{reason=\"duplicate_host\"} ")
            })
            .and_then(|v| v.parse().ok())
            .expect("the duplicate_host series");
        assert!(value >= (before + 1) as f64, "{value}");
    }
}
