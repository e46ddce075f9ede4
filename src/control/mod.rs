//! The control plane: providers (who run functions) and the tasks that change replica counts:
//! the queue-depth scaler, Prometheus alert scaling and scale from zero.
//! Nothing here runs on the request path; it publishes snapshots to the data plane.

pub mod alert;
pub mod cluster;
pub(crate) mod cold_start;
pub mod events;
pub mod local;
pub mod namespaces;
pub mod nomad;
pub mod provider;
pub mod scaler;
pub mod secrets;

pub use provider::{LogQuery, LogStream, Provider, ProviderError};
