//! The OpenFaaS HTTP API (pending).
pub mod types;
