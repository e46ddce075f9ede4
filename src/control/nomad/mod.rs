//! The `nomad` provider: functions as Nomad jobs.
//!
//! - [`render`]: one deployment -> one job JSON, from an operator-replaceable template.
//! - [`resources`]: OpenFaaS resource strings -> Nomad MHz / MiB.
//! - [`constraints`]: OpenFaaS `attr op value` constraints -> Nomad constraints.
//! - [`provider`]: the [`crate::control::Provider`] on the Nomad HTTP API (deploy, update,
//!   scale, delete, list, status, namespaces) and the set of functions routed, kept in step
//!   with Nomad; replicas come from [`crate::discovery`].
//! - [`rollout`]: an update as a blue/green Nomad deployment whose switch the gateway makes
//!   (no gap; a failed update leaves the old version serving).
//! - [`scale_down`]: which allocations Nomad stops when a count drops (they leave rotation
//!   and finish their requests before the scale call).
//! - [`logs`]: Nomad's client logs API as OpenFaaS log lines.

pub mod constraints;
pub(crate) mod logs;
pub(crate) mod provider;
pub mod render;
pub mod resources;
pub(crate) mod rollout;
pub(crate) mod scale_down;

pub use provider::NomadOptions;
pub(crate) use provider::NomadProvider;

/// Settings of this module's property tests: a fixed seed (the same cases on every run and
/// machine) and no failure files written into the tree.
#[cfg(test)]
pub(crate) fn fixed_seed_proptest() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0fa5_6a7e),
        failure_persistence: None,
        ..Default::default()
    }
}
