//! Async invocations (`/async-function/{name}`): calls accepted with 202 once durably
//! stored, then delivered at least once through the data plane, with retries, dead letters
//! and callbacks.
//!
//! - [`call`]: one stored call and its record format.
//! - [`store`]: what a store does ([`CallStore`]: durable enqueue, leases, retries, the
//!   dead-letter list).
//! - [`embedded`]: the default store, SQLite under the data dir.
//! - [`nats`]: the store shared by a cluster of gateways, NATS JetStream (`--queue nats://`).
//! - [`dispatch`]: delivery through the gateway's own `/function` route, retries, burial.
//! - [`callback`]: the function's answer POSTed to the call's `X-Callback-Url`.
//! - [`stats`]: the `faasgate_async_*` metrics.
//!
//! Layer: above `dataplane`, `metrics` and `client`, below `control` (whose scaler counts the
//! backlog as demand) and `api` (which enqueues).

pub mod call;
pub mod callback;
pub mod dispatch;
pub mod embedded;
pub mod nats;
pub mod stats;
pub mod store;

pub use call::{EncodedCall, QueuedCall};
pub use callback::{CallbackConfig, Callbacks};
pub use dispatch::{DispatchConfig, Dispatcher};
pub use embedded::EmbeddedStore;
pub use nats::NatsStore;
pub use stats::AsyncStats;
pub use store::{Backlog, CallStore, DeadLetter, StoreError, Taken};

#[cfg(test)]
mod tests;
