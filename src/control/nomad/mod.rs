//! The `nomad` provider: functions as Nomad jobs.
//!
//! - [`render`]: one deployment -> one job JSON, from an operator-replaceable template.
//! - [`resources`]: OpenFaaS resource strings -> Nomad MHz / MiB.
//! - [`constraints`]: OpenFaaS `attr op value` constraints -> Nomad constraints.

pub mod constraints;
pub mod render;
pub mod resources;
