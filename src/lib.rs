//! # faasgate
//!
//! An OpenFaaS-compatible Functions-as-a-Service gateway and autoscaler.
//!
//! ## The planes
//! - **Data plane** ([`dataplane`]): serves `/function/{name}`. It reads immutable snapshots
//!   (the route table, each function's [`dataplane::FunctionState`]) through `ArcSwap`, picks a
//!   replica by power of two choices over pending requests, forwards over a pooled keep-alive
//!   connection and streams the body back, counting demand and latency in atomics.
//! - **Control plane** ([`control`]): providers (the embedded `local` one runs functions as
//!   `faasgate watchdog` child processes) own function specs and replicas and publish new
//!   snapshots off the request path; the cold-start task scales a function from zero when a
//!   held request asks for it; the scaler (`control::scaler`) sizes every function to the
//!   demand the data plane counts, and `/system/alert` applies Prometheus alerts.
//! - **API** ([`api`]): the OpenFaaS HTTP API (`/system/*` behind basic auth, `/healthz`,
//!   `/metrics`, `/ui/`) on the same listener.
//!
//! ## Layers
//! From the bottom: [`model`] (names, the OpenFaaS types, scale settings, stack files) and
//! [`sys`] (clocks, processes) import nothing of the crate; [`http1`] is the HTTP/1.1 wire
//! shared by the data plane and the watchdog; [`dataplane`] holds the invocation path's
//! policy; [`control`] and [`discovery`] run and watch functions; [`api`] is on top.
//! docs/architecture.md draws them and follows an invocation, a cold start and a scale
//! decision through their files; `tests/it/boundaries.rs` enforces the imports.
//!
//! ## The life of a request
//! The connection loop (`dataplane::conn`) plans `/function/{name}[.{ns}][/{path}]` on the
//! request's bytes (`http1::head::plan`), looking the function up with a borrowed key (no
//! allocation), and hands it to `dataplane::forward`: no ready replica -> hold (bounded) and
//! wake a scale-up; else p2c pick -> check out a pooled connection -> send -> the response is
//! copied by its framing, the connection returns to the pool and latency is recorded when the
//! body ends. Other requests go to hyper's server and [`api::Gateway`].
//!
//! ## Where state lives
//! Function specs: the provider (the local one persists them under the data dir). Replica
//! sets and counters: the data plane's [`dataplane::Routes`]. Nothing else is shared.

// Items are `pub(crate)` unless the binary, the tests, the benches or the fuzz targets use
// them; a `pub` item nothing outside can reach is a warning (and CI denies warnings).
#![warn(unreachable_pub)]
// The docs are for people working on faasgate, and name the private items that keep each
// module's invariants; `cargo doc --document-private-items` renders those links.
#![allow(rustdoc::private_intra_doc_links)]

pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod discovery;
pub mod gateway;
pub mod http1;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod sys;
#[doc(hidden)]
pub mod testing;
pub mod watchdog;

/// The release, from Cargo.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");
/// The git commit this binary was built from (set by build.rs; `unknown` outside git).
pub const SHA: &str = env!("FAASGATE_GIT_SHA");
