//! Prometheus exposition (pending).
