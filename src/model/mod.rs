//! The OpenFaaS model: function names and keys, the API's JSON types, the
//! `com.openfaas.scale.*` settings, and stack files.
//!
//! The bottom layer: it imports nothing else of the crate, does no I/O but reading a stack
//! file, and every other module may use it. One parser per rule lives here, so the API, the
//! providers, the renderer and the scaler give one answer for one input.

pub(crate) mod duration;
pub mod names;
pub mod queue;
pub mod scale;
pub mod stack;
pub mod types;
