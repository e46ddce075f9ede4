//! The OpenFaaS HTTP API (being assembled).
pub mod types;
