//! The integration tests, one module per capability, in one binary: each test file used to
//! link the whole crate on its own. Most start the real `faasgate` binary or an in-process
//! gateway on an ephemeral port and talk HTTP to it.
//!
//! Two test files stay separate binaries because they measure or set the process itself:
//! `tests/alloc_budget.rs` installs a counting global allocator, and `tests/hardening.rs`
//! sets the process-wide upstream pool limits and measures the process's resident memory,
//! which tests running beside it in one process would disturb.
//!
//! Run one capability with `cargo test --test it MODULE::`, e.g. `cargo test --test it
//! gateway::`.
#![allow(clippy::unwrap_used)] // test and tool code: a failed unwrap is a failed run

#[path = "../support/inproc.rs"]
mod inproc;
#[path = "../support/nats.rs"]
mod nats;
#[path = "../support/nomad_double.rs"]
mod nomad_double;
#[path = "../support/mod.rs"]
mod support;

mod airflow_hook;
mod async_calls;
mod async_nats;
mod boundaries;
mod cluster;
mod differential_wire;
mod downstream_wire;
mod faas_cli;
mod gateway;
mod local_provider;
mod namespaces;
mod nomad_conformance;
mod nomad_job_files;
mod nomad_provider;
mod nomad_secrets;
mod nomad_tls;
mod nomad_updates;
mod nomad_variables;
mod prometheus;
mod render;
mod scaler;
mod scaler_sim;
mod secrets;
mod ui_api;
mod ui_browser;
mod upstream_wire;
mod watchdog;
