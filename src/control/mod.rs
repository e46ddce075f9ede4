//! The control plane: providers (who run functions) and the tasks that change replica counts.
//! Nothing here runs on the request path; it publishes snapshots to the data plane.

pub mod cold_start;
pub mod events;
pub mod local;
pub mod nomad;
pub mod provider;

pub use provider::{LogQuery, LogStream, Provider, ProviderError};
